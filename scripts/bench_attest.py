"""Latency of an on-demand attestation: compute (what-if margin) + sign by the quorum, in-process.

    .venv/bin/python scripts/bench_attest.py [--n 1000]

A fresh Anvil, the devnet deployment, an account holding 20 positions (perps, futures, calls and
puts on BTC and ETH), an engine with 3 in-process signers (quorum 2). Each request proposes a
different fill; the engine computes the account's post-trade margin with the compiled kernel and
both signers sign the EIP-712 digest. Measured per request on the indexed state (the "compute +
sign" path); the same run also times the full path with an index refresh, and a plain reference:
the scalar brute-force margin (``offchain/risk/reference.py``) with eth-account's generic
``sign_typed_data``. The last line is JSON with ``p50_ms``, ``p99_ms``, ``n``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from eth_account import Account

from offchain.chain.anvil import DEFAULT_KEYS, start_anvil
from offchain.chain.client import connect
from offchain.chain.deploy import InstrumentSpec, list_instruments
from offchain.chain.devnet import bootstrap
from offchain.chain.units import Kind
from offchain.engine.core import TradeRequest
from offchain.engine.service import build_engine
from offchain.engine.signer import LocalSigner, SignJob
from offchain.risk.reference import reference_account
from tests.chain.harness import USDC, Harness

GENESIS = 1_767_225_600
U = 10**18
DAY = 86_400


def _list_book(h: Harness) -> list[int]:
    now = h.now()
    strikes = [(40_000 + 2_000 * i if i % 2 == 0 else 2_000 + 100 * i) * U for i in range(16)]
    specs = [InstrumentSpec(Kind.CALL if i % 2 else Kind.PUT, i % 2, now + (7 + 7 * (i % 3)) * DAY, strikes[i])
             for i in range(16)]  # fmt: skip
    specs.append(InstrumentSpec(Kind.FUTURE, 1, now + 30 * DAY))
    return list(h.ids.values()) + list_instruments(h.p, h.deployer, specs)


def _build_portfolio(h: Harness, ids: list[int], positions: int) -> str:
    alice, bob = DEFAULT_KEYS[1], DEFAULT_KEYS[2]
    for key in (alice, bob):
        h.fund(key, "USDC", 10**8 * USDC)
        h.deposit(key, "USDC", 10**7 * USDC)
    for n, ins in enumerate(ids[:positions]):
        size, price = U // 10 * (1 + n % 3), h.in_band(ins, 1_000 * U + n * 10**15)
        buy = n % 3 != 0
        h.trade(alice, h.order(alice, ins, buy, size, price, nonce=n + 1), bob,
                h.order(bob, ins, not buy, size, price, nonce=n + 1), size)  # fmt: skip
    return str(Account.from_key(alice).address)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    n = ap.parse_args().n
    with start_anvil(timestamp=GENESIS) as node, tempfile.TemporaryDirectory() as tmp:
        dev = bootstrap(connect(node.url), DEFAULT_KEYS[0], rpc_url=node.url, timelock=None)  # lists instruments
        h = Harness(dev.protocol, DEFAULT_KEYS[0], dev.risk_signers, dev.price_signers, dev.instruments)
        ids = _list_book(h)
        account = _build_portfolio(h, ids, 20)
        signers = [LocalSigner(s._key.to_bytes(), dev.protocol.domain("RiskOracle")) for s in dev.risk_signers]
        engine = build_engine(dev.protocol, signers, DEFAULT_KEYS[0], Path(tmp))
        state = engine.refresh()
        positions = len(state.accounts[account].positions)
        issued, expiry = state.timestamp, state.timestamp + 120
        rng = np.random.default_rng(1)
        requests = [TradeRequest(account, int(ids[int(rng.integers(0, 20))]), int(rng.integers(-20, 20) or 1) * 10**15,
                                 1_000 * U, 1_000_000) for _ in range(n)]  # fmt: skip
        for req in requests[:20]:  # warm-up: numba compile, caches
            engine.core.attest_trade(state, req, issued, expiry)
        samples = []
        for req in requests:
            t0 = time.perf_counter()
            att = engine.core.attest_trade(state, req, issued, expiry)
            engine._collect(SignJob(state.block, att, req))
            samples.append((time.perf_counter() - t0) * 1e3)
        full = []
        for req in requests[:200]:
            t0 = time.perf_counter()
            engine.attest_trade(req.account, req.instrument, req.size_delta, req.price, "taker")
            full.append((time.perf_counter() - t0) * 1e3)
        ref_ms = _reference(engine, state, account, requests[:50], dev.protocol.domain("RiskOracle"))
    samples.sort()
    p50, p99 = statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]
    full.sort()
    print(f"account positions            {positions}")
    print(f"compute + sign (2 signers)   p50 {p50:.3f} ms   p99 {p99:.3f} ms   (n = {n}; targets 5 / 20 ms)")
    full_p99 = full[int(0.99 * (len(full) - 1))]
    print(f"with index refresh (RPC)     p50 {statistics.median(full):.3f} ms   p99 {full_p99:.3f} ms")
    print(f"plain reference              p50 {ref_ms:.3f} ms   (scalar margin + eth-account sign_typed_data)")
    print(f"ratio reference / engine     {ref_ms / p50:.1f}x")
    print(json.dumps({"p50_ms": round(p50, 4), "p99_ms": round(p99, 4), "n": n, "positions": positions,
                      "signers": 2, "full_p50_ms": round(statistics.median(full), 4),
                      "reference_p50_ms": round(ref_ms, 4), "ratio": round(ref_ms / p50, 2)}))  # fmt: skip


def _reference(engine: object, state: object, account: str, requests: list[TradeRequest], domain: object) -> float:
    """The same attestation the plain way: scalar margin, generic typed-data signing by 2 keys."""
    from offchain.engine.service import Engine

    assert isinstance(engine, Engine)
    core = engine.core
    model = core.engine(state)  # type: ignore[arg-type]
    keys = [s._signer._key for s in engine.signers[:2]]  # type: ignore[attr-defined]
    times = []
    for req in requests:
        t0 = time.perf_counter()
        current = core.account_state(state, state.accounts[account])  # type: ignore[attr-defined]
        what = model.what_if_trade(current, req.instrument, req.size_delta / 1e18, req.price / 1e18, req.fee / 1e6)
        m = reference_account(core.config, model.instruments, model.market, what.state, model.grid, model.tail)
        message = {
            "account": account, "riskNonce": 0, "actionHash": b"\x00" * 32,
            "marginEquity": int(m.margin_equity), "mtmEquity": int(m.mtm_equity), "initialMargin": int(m.im),
            "maintenanceMargin": int(m.mm), "creditCheckpoint": 0, "paramsHash": b"\x00" * 32, "priceRound": 1,
            "issuedAt": 0, "expiry": 1,
        }  # fmt: skip
        for key in keys:
            Account.sign_typed_data(key.to_bytes(), domain.as_dict(), _TYPES, message)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


_TYPES = {"Attestation": [{"name": n, "type": t} for n, t in (
    ("account", "address"), ("riskNonce", "uint64"), ("actionHash", "bytes32"), ("marginEquity", "int256"),
    ("mtmEquity", "int256"), ("initialMargin", "uint256"), ("maintenanceMargin", "uint256"),
    ("creditCheckpoint", "uint256"), ("paramsHash", "bytes32"), ("priceRound", "uint64"), ("issuedAt", "uint64"),
    ("expiry", "uint64"))]}  # fmt: skip


if __name__ == "__main__":
    main()
