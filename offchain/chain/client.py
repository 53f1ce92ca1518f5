"""Web3 access to a deployed protocol: contract handles, signed transactions, decoded reverts."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from eth_abi import decode
from eth_account import Account
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import Nonce, TxParams, TxReceipt

from offchain.chain.build import Artifact, load_artifacts
from offchain.chain.eip712 import EXCHANGE_DOMAIN, PRICE_FEED_DOMAIN, RISK_ORACLE_DOMAIN, Domain
from offchain.errors import ChainError, ContractRevertError

T = TypeVar("T")
_NONCE_ERRORS = re.compile(r"nonce too low|replacement transaction underpriced|already known", re.IGNORECASE)
CORE = ("RiskParams", "PriceFeed", "RiskOracle", "Instruments", "Vault", "Exchange", "VaultLens", "StandardMargin",
        "InsuranceFund", "Liquidator", "Settler")
# The RiskOracle is a module of the Vault: its address and ABI are the Vault's.
ABI_OF = {"RiskOracle": "Vault"}


@dataclass
class TokenInfo:
    symbol: str
    address: str
    decimals: int
    underlying: int | None  # feed index of a volatile collateral, None for the quote token


@dataclass
class Deployment:
    """What a deployment file holds: addresses, tokens, signers and where the ABIs are."""

    chain_id: int
    rpc_url: str
    deploy_block: int
    contracts: dict[str, str]
    tokens: dict[str, TokenInfo]
    underlyings: list[str]
    artifacts: str = "build/contracts.json"
    fee_collector: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        if not path.exists():
            raise ChainError(f"deployment file {path} not found: deploy first (pmsim deploy)")
        raw = json.loads(path.read_text())
        raw["tokens"] = {k: TokenInfo(**v) for k, v in raw["tokens"].items()}
        return cls(**raw)


class ErrorDecoder:
    """Maps custom-error selectors of every compiled contract to readable names and arguments."""

    def __init__(self, artifacts: dict[str, Artifact]) -> None:
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        for art in artifacts.values():
            for item in art.abi:
                if item.get("type") != "error":
                    continue
                types = [_abi_type(i) for i in item["inputs"]]
                sig = f"{item['name']}({','.join(types)})"
                self._errors[function_signature_to_4byte_selector(sig)] = (item["name"], types)

    def decode(self, data: str | bytes) -> ContractRevertError:
        raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else data
        entry = self._errors.get(raw[:4])
        if entry is None:
            return ContractRevertError("UnknownError", (), raw.hex())
        name, types = entry
        try:
            args = tuple(decode(types, raw[4:]))
        except Exception:  # undecodable payload: keep the name
            args = ()
        return ContractRevertError(name, args, raw.hex())


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][5:]}"
    return str(item["type"])


class Protocol:
    """Handles on a deployed protocol plus a small transaction sender with local keys."""

    def __init__(self, w3: Web3, deployment: Deployment, artifacts: dict[str, Artifact] | None = None) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.artifacts = artifacts or load_artifacts()
        self.decoder = ErrorDecoder(self.artifacts)
        self.chain_id = deployment.chain_id
        self.c: dict[str, Contract] = {
            name: w3.eth.contract(address=to_checksum_address(addr), abi=self.abi_of(name))
            for name, addr in deployment.contracts.items()
        }
        token_abi = self.artifacts["MockERC20"].abi
        self.tokens: dict[str, Contract] = {
            sym: w3.eth.contract(address=to_checksum_address(t.address), abi=token_abi)
            for sym, t in deployment.tokens.items()
        }
        self._nonces: dict[str, int] = {}

    def abi_of(self, name: str) -> list[dict[str, Any]]:
        """The ABI of a deployed contract (the RiskOracle's is its Vault's, whatever build of it)."""
        name = ABI_OF.get(name, name)
        return self.artifacts[self.deployment.extra.get("artifact_of", {}).get(name, name)].abi

    # ------------------------------------------------------------------ handles
    @property
    def vault(self) -> Contract:
        return self.c["Vault"]

    @property
    def exchange(self) -> Contract:
        return self.c["Exchange"]

    @property
    def feed(self) -> Contract:
        return self.c["PriceFeed"]

    @property
    def oracle(self) -> Contract:
        return self.c["RiskOracle"]

    @property
    def params(self) -> Contract:
        return self.c["RiskParams"]

    @property
    def instruments(self) -> Contract:
        return self.c["Instruments"]

    @property
    def lens(self) -> Contract:
        return self.c["VaultLens"]

    @property
    def liquidator(self) -> Contract:
        return self.c["Liquidator"]

    @property
    def fund(self) -> Contract:
        return self.c["InsuranceFund"]

    @property
    def standard_margin(self) -> Contract:
        return self.c["StandardMargin"]

    @property
    def settler(self) -> Contract:
        return self.c["Settler"]

    def domain(self, contract: str) -> Domain:
        name, version = {
            "Exchange": EXCHANGE_DOMAIN,
            "PriceFeed": PRICE_FEED_DOMAIN,
            "RiskOracle": RISK_ORACLE_DOMAIN,
        }[contract]
        return Domain(name, version, self.chain_id, self.deployment.contracts[contract])

    # ------------------------------------------------------------------ chain time
    def now(self) -> int:
        """The latest block's timestamp: protocol time, never the wall clock."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    # ------------------------------------------------------------------ calls and transactions
    def call(self, fn: ContractFunction, *, sender: str | None = None, retries: int = 3) -> Any:
        """A read-only call with custom errors decoded into :class:`ContractRevertError`; transport
        failures (connection errors, timeouts) are retried with exponential backoff."""
        return self._retrying(lambda: self._decoded(lambda: fn.call({"from": sender} if sender else {})), retries)

    def send(self, fn: ContractFunction, key: str, *, gas: int | None = None, retries: int = 3) -> TxReceipt:
        """Sign ``fn`` with ``key``, send it and wait for the receipt; reverts raise decoded errors.

        Transport failures (connection errors, timeouts) are retried with exponential backoff by
        re-sending the *same* signed transaction, so a lost answer never causes a double send; a
        nonce taken by another process (another sender on this key) re-signs with a fresh nonce.
        A revert is final and never retried.
        """
        account = Account.from_key(key)
        sender = account.address
        if gas is None:
            estimate = self._retrying(lambda: self._decoded(lambda: fn.estimate_gas({"from": sender})), retries)
            gas = int(estimate * 1.2) + 20_000
        for _ in range(retries + 1):
            raw, tx_hash, nonce = self._sign(fn, account, sender, gas)
            try:
                self._broadcast(raw, retries)
            except Web3RPCError as exc:
                if not _NONCE_ERRORS.search(str(exc)):
                    self._nonces.pop(sender, None)
                    raise ChainError(f"transaction refused by the node: {exc}") from None
                if self._known(tx_hash) is None:  # our nonce went to another transaction
                    self._nonces.pop(sender, None)
                    continue
            self._nonces[sender] = nonce + 1
            receipt = self._receipt(tx_hash, retries)
            if receipt["status"] != 1:
                self._nonces.pop(sender, None)
                self._explain_revert(fn, sender, int(receipt["blockNumber"]))
                raise ChainError(f"transaction {tx_hash.hex()} reverted")
            return receipt
        raise ChainError(f"could not get a nonce for {sender} after {retries + 1} attempts")

    def _broadcast(self, raw: bytes, retries: int) -> None:
        self._retrying(lambda: self.w3.eth.send_raw_transaction(raw), retries)

    def _receipt(self, tx_hash: bytes, retries: int) -> TxReceipt:
        return self._retrying(lambda: self.w3.eth.wait_for_transaction_receipt(HexBytes(tx_hash), timeout=60), retries)

    def _sign(self, fn: ContractFunction, account: Any, sender: str, gas: int) -> tuple[bytes, bytes, int]:
        nonce = self._nonces.get(sender)
        if nonce is None:
            nonce = self._retrying(lambda: self.w3.eth.get_transaction_count(to_checksum_address(sender), "pending"))
        params: TxParams = {"from": to_checksum_address(sender), "nonce": Nonce(nonce), "gas": gas,
                            "chainId": self.chain_id}  # fmt: skip
        tx = self._retrying(lambda: fn.build_transaction(params))
        signed = account.sign_transaction(tx)
        return bytes(signed.raw_transaction), bytes(signed.hash), nonce

    def _known(self, tx_hash: bytes) -> Any:
        try:
            return self._retrying(lambda: self.w3.eth.get_transaction(HexBytes(tx_hash)))
        except TransactionNotFound:
            return None

    def _retrying(self, thunk: Callable[[], T], retries: int = 3) -> T:
        """``thunk()``, retrying transport failures with exponential backoff."""
        for attempt in range(retries + 1):
            try:
                return thunk()
            except (ConnectionError, TimeoutError, OSError) as exc:
                if attempt == retries:
                    raise ChainError(f"RPC failed after {retries + 1} attempts: {exc}") from exc
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _explain_revert(self, fn: ContractFunction, sender: str, block: int) -> None:
        """Replay a reverted transaction as a call to recover its custom error (raises it if found)."""
        for at in (block, block - 1):
            self.call_at(fn, sender, at)

    def call_at(self, fn: ContractFunction, sender: str, block: int) -> Any:
        return self._decoded(lambda: fn.call({"from": sender}, block_identifier=block))

    def _decoded(self, thunk: Callable[[], T]) -> T:
        try:
            return thunk()
        except ContractCustomError as exc:
            raise self.decoder.decode(str(exc.data)) from None
        except ContractPanicError as exc:
            raise ContractRevertError("Panic", (str(exc),)) from None
        except ContractLogicError as exc:
            data = exc.data if isinstance(exc.data, str) else ""
            if data and data != "0x":
                raise self.decoder.decode(data) from None
            raise ContractRevertError("Revert", (str(exc),)) from None

    def reset_nonces(self) -> None:
        self._nonces.clear()


def connect(url: str, timeout: float = 30.0) -> Web3:
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))
    if not w3.is_connected():
        raise ChainError(f"cannot reach an RPC endpoint at {url}")
    return w3
