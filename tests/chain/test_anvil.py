"""The Anvil wrapper: what it leaves behind."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import pytest

from offchain.chain.anvil import start_anvil

pytestmark = pytest.mark.chain


def _rpc(url: str, method: str, *params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)["result"]


def test_evicted_block_states_go_to_a_folder_removed_on_stop() -> None:
    """Anvil writes the block states it evicts from memory to disk and never removes them (63 GB once
    filled this machine's disk): each node gets its own cache folder, gone when it stops."""
    node = start_anvil()
    try:
        assert node.cache is not None and node.cache.is_dir()
        sender = _rpc(node.url, "eth_accounts")[0]
        for _ in range(1_200):  # past the states Anvil keeps in memory
            _rpc(node.url, "eth_sendTransaction", {"from": sender, "to": "0x" + "de" * 20, "value": "0x1"})
        assert any(files for _, _, files in os.walk(node.cache))  # evicted states written there
    finally:
        node.stop()
    assert not node.cache.exists()
