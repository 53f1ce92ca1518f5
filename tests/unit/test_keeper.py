"""Keeper logic without a chain: configuration errors name their field, the bid timing equals a
plain second-by-second scan of the contract rules, the attestor speaks the engine's JSON."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from offchain import rules
from offchain.chain.eip712 import Attestation
from offchain.errors import ConfigError
from offchain.keeper import strategy
from offchain.keeper.attest import AttestationRefused, HttpAttestor
from offchain.keeper.config import KeeperConfig, ProfitConfig, UnwindConfig, load_config
from offchain.keeper.metrics import JsonFormatter
from offchain.protocol import WAD

ROOT = Path(__file__).resolve().parents[2]
USDC = 10**6
PARAMS = rules.AuctionParams(95 * WAD // 100, 70 * WAD // 100, 900, 12 * 3600, 3600, 15 * WAD // 100, WAD // 10,
                             1_000 * USDC)  # fmt: skip
KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


# ---------------------------------------------------------------------- configuration
def test_example_config_loads_and_flags_override() -> None:
    over = {"fees.max_fee_gwei": 50.0, "dry_run": True, "poll_interval_s": None}
    cfg = load_config(ROOT / "config" / "keeper.toml", over)
    assert cfg.fees.max_fee_gwei == 50.0 and cfg.dry_run and cfg.poll_interval_s == 1.0
    assert cfg.fees.bump == 0.125 and cfg.profit.min_profit_ratio == 0.01 and cfg.profit.gas_multiple == 1.01
    assert not cfg.recompute.enabled and not cfg.hedge.enabled  # optional strategies are off by default
    over = {"recompute.enabled": True, "hedge.risk_config": "config/risk.toml"}
    on = load_config(ROOT / "config" / "keeper.toml", over)
    assert on.recompute.enabled and on.hedge.risk_config == Path("config/risk.toml")


@pytest.mark.parametrize(("text", "field"), [
    ("[fees]\nbump = 0.1\n", "fees.bump"),
    ("[fees]\nmax_fee_gwei = -1\n", "fees.max_fee_gwei"),
    ("[fees]\npriority_fee_gwei = 9\nmax_fee_gwei = 2\n", "fees.priority_fee_gwei"),
    ("[keeper]\npoll_interval_s = \"fast\"\n", "poll_interval_s"),
    ("[keeper]\nrpc = \"x\"\n", "rpc"),
    ("[profit]\nmax_fraction = 1.5\n", "profit.max_fraction"),
    ("[unwind]\ndepth_usd = 0\n", "unwind.depth_usd"),
    ("[gas]\nx = 1\n", "gas"),
    ("[profit]\nlanding_s = -1\n", "profit.landing_s"),
    ("[recompute]\ntolerance_usd = -0.5\n", "recompute.tolerance_usd"),
    ("[recompute]\nenabled = \"yes\"\n", "recompute.enabled"),
    ("[hedge]\nmax_slippage_bps = 20000\n", "hedge.max_slippage_bps"),
    ("[hedge]\nmin_delta = 0\n", "hedge.min_delta"),
    ("[hedge]\nvenue = \"x\"\n", "hedge.venue"),
    ("[keeper\n", "config"),
])  # fmt: skip
def test_bad_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "k.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_key_from_env_or_file_and_never_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K_TEST", KEY)
    assert KeeperConfig(key_env="K_TEST").load_key() == KEY
    monkeypatch.delenv("K_TEST")
    with pytest.raises(ConfigError, match="K_TEST"):
        KeeperConfig(key_env="K_TEST").load_key()
    bad = tmp_path / "key"
    bad.write_text(KEY[:-4] + "zzzz")
    with pytest.raises(ConfigError) as info:
        KeeperConfig(key_file=bad).load_key()
    assert info.value.field == "key_file" and KEY[2:30] not in str(info.value)


# ---------------------------------------------------------------------- bid timing
def _scan(a: rules.AuctionState, now: int, gas: int, p: ProfitConfig, u: UnwindConfig,
          min_profit: int = 0) -> int | None:  # fmt: skip
    """Plain reference: the first second at which the best bid is profitable (and earns ``min_profit``),
    tried one by one."""
    for t in range(now, strategy.horizon(a, PARAMS) + 1):
        plan = strategy.best_bid(a, t, PARAMS, gas, p, u)
        if plan is not None and plan.profitable and plan.profit >= min_profit:
            return t
    return None


@pytest.mark.parametrize("seed", range(6))
def test_earliest_profitable_time_equals_a_second_by_second_scan(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mm = int(rng.integers(2_000, 50_000)) * USDC
    equity = mm - int(rng.integers(100, mm // USDC // 2)) * USDC
    mtm = equity + int(rng.integers(0, 2_000)) * USDC
    a = rules.open_auction(1_000, mtm, equity, mm, mm * 5 // 4, PARAMS)
    u = UnwindConfig(base_bps=float(rng.uniform(100, 1_500)), impact_bps=float(rng.uniform(0, 50)), depth_usd=1e5)
    p, gas = ProfitConfig(), int(rng.integers(1, 20)) * USDC
    start = 1_000 + int(rng.integers(0, 600))
    plan = strategy.earliest_profitable(a, start, PARAMS, gas, p, u)
    assert (plan.at if plan else None) == _scan(a, start, gas, p, u)
    floor = int(rng.integers(1, 400)) * USDC  # a keeper's minimum profit: a later second, never an earlier one
    richer = strategy.earliest_profitable(a, start, PARAMS, gas, p, u, min_profit=floor)
    assert (richer.at if richer else None) == _scan(a, start, gas, p, u, floor)
    assert richer is None or (plan is not None and richer.at >= plan.at and richer.profit >= floor)
    if plan is not None:
        assert plan.profitable and plan.profit >= p.gas_multiple * gas - gas
        assert plan.profit >= p.min_profit_ratio * (abs(plan.price) + plan.fee)
        price, fee = rules.bid_price(a, plan.fraction, plan.at, PARAMS)
        assert (plan.price, plan.fee) == (price, fee)  # the contract's own price


def test_profit_rule_defaults() -> None:
    p = ProfitConfig()
    assert strategy.meets(gross=102, gas=100, price=0, fee=0, p=p) is True  # 1.02 × gas, net 2 ≥ 1 % of 0
    assert strategy.meets(gross=100, gas=100, price=0, fee=0, p=p) is False  # not above gas × 1.01
    assert strategy.meets(gross=1_000, gas=10, price=100_000, fee=0, p=p) is False  # net 990 < 1 % of 100,000
    assert strategy.meets(gross=1_011, gas=10, price=100_000, fee=0, p=p) is True


def test_unwind_cost_formula() -> None:
    u = UnwindConfig(base_bps=30, impact_bps=10, depth_usd=1_000_000, fixed_usd=2)
    x = 500_000 * USDC
    assert strategy.unwind_cost(x, u) == int(x * (30 + 10 * 0.5) / 10_000) + 2 * USDC
    assert strategy.unwind_cost(0, u) == 0


def test_insolvent_auction_plan_is_paid_by_the_fund() -> None:
    a = rules.open_auction(0, -2_000 * USDC, -2_500 * USDC, 3_000 * USDC, 3_750 * USDC, PARAMS)
    plan = strategy.earliest_profitable(a, 0, PARAMS, 5 * USDC, ProfitConfig(), UnwindConfig(base_bps=50))
    assert plan is not None and plan.fraction == WAD and plan.price < 0 and plan.at > 0
    assert plan.price == rules.bid_price(a, WAD, plan.at, PARAMS)[0]


# ---------------------------------------------------------------------- attestor and logs
class _Engine:
    def __init__(self, status: int, answer: dict[str, Any]) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_http_attestor_posts_the_contract_and_parses_the_trade_shape() -> None:
    att = Attestation("0x" + "11" * 20, 3, b"\x22" * 32, 10**12, 10**12, 0, 0, 0, b"\x33" * 32, 7, 100, 220)
    fields = {k: ("0x" + v.hex() if isinstance(v, bytes) else v if isinstance(v, str) else str(v))
              for k, v in att.__dict__.items()}  # fmt: skip
    eng = _Engine(200, {"attestation": fields, "signatures": "0x" + "ab" * 130, "block": 9})
    try:
        got = HttpAttestor(eng.url).attest_bid("0x" + "44" * 20, "0x" + "55" * 20, WAD // 3, -1_234)
    finally:
        eng.server.shutdown()
    assert eng.bodies == [{"bidder": "0x" + "44" * 20, "account": "0x" + "55" * 20, "fraction": "0.333333333333333333",
                           "worst_price": "-0.001234"}]  # fmt: skip
    assert got.attestation == att and got.signatures == b"\xab" * 130


def test_http_attestor_refusal_names_the_field() -> None:
    eng = _Engine(422, {"error": "insufficient margin after this action", "field": "fraction"})
    try:
        with pytest.raises(AttestationRefused) as info:
            HttpAttestor(eng.url).attest_bid("0x" + "44" * 20, "0x" + "55" * 20, 1, 1)
    finally:
        eng.server.shutdown()
    assert info.value.status == 422 and info.value.field == "fraction"


def test_json_log_lines() -> None:
    rec = logging.LogRecord("offchain.keeper.bot", logging.INFO, "", 0, "sent", (), None)
    rec.fields = {"nonce": 4, "kind": "bid"}
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "sent" and out["nonce"] == 4 and out["logger"] == "offchain.keeper.bot"


def test_http_attestor_asks_for_a_hedge_trade_in_engine_units() -> None:
    att = Attestation("0x" + "11" * 20, 3, b"\x22" * 32, 10**12, 10**12, 0, 0, 0, b"\x33" * 32, 7, 100, 220)
    fields = {k: ("0x" + v.hex() if isinstance(v, bytes) else v if isinstance(v, str) else str(v))
              for k, v in att.__dict__.items()}  # fmt: skip
    eng = _Engine(200, {"attestation": fields, "signatures": "0x" + "ab" * 65, "block": 9})
    try:
        got = HttpAttestor(eng.url).attest_trade("0x" + "44" * 20, 1, -1_500 * 10**15, 41_250_500 * 10**15, "taker")
    finally:
        eng.server.shutdown()
    assert eng.bodies == [{"account": "0x" + "44" * 20, "instrument": 1, "size": "-1.5", "price": "41250.5",
                           "role": "taker"}]  # fmt: skip
    assert got.attestation == att


def test_http_counterparty_quote_is_parsed_by_order_field_names_and_verifies() -> None:
    """The counterparty's answer names the Order fields; the parsed order's signature recovers its account."""
    from eth_account import Account

    from offchain.chain.eip712 import Domain, Order, Signer, digest, sign_order
    from offchain.keeper.hedge import HttpCounterparty

    maker = Account.from_key(KEY).address
    domain = Domain("pmsim Exchange", "1", 31337, "0x" + "66" * 20)
    order = Order.own(maker, 1, True, 1_500 * 10**15, 41_000 * 10**18, 9, 2_000_000_000, maker=True)
    sig = sign_order(domain, order, Signer(KEY))
    answer = {"order": {k: (v if isinstance(v, str | bool) else str(v)) for k, v in order.__dict__.items()},
              "signature": "0x" + sig.hex()}  # fmt: skip
    cp = _Engine(200, answer)
    try:
        got = HttpCounterparty(cp.url).quote(1, False, 1_500 * 10**15, 40_800 * 10**18, 2_000_000_000)
    finally:
        cp.server.shutdown()
    assert cp.bodies == [{"instrument": 1, "keeper_buys": False, "size": str(1_500 * 10**15),
                          "limit_price": str(40_800 * 10**18), "deadline": 2_000_000_000}]  # fmt: skip
    assert got is not None and got.order == order and got.signature == sig
    assert Account._recover_hash(digest(domain, got.order.struct_hash()), signature=got.signature) == maker


@pytest.mark.parametrize(("position", "delta", "size"), [
    (0.3, 0.3, 0.3),  # close exactly
    (0.3, 0.3069, 0.306 + 0.004),  # −0.006 is below the 0.01 minimum: −0.01 leaves the smaller residual
    (0.3, 0.3041, 0.3),  # −0.004 would be refused: closing leaves 0.0041, the minimum −0.0059
    (0.0, 0.006, 0.01),  # collateral only: a 0.01 short beats nothing (residual −0.004 vs 0.006)
    (0.0, 0.004, 0.0),  # nothing beats a 0.01 short (residual 0.004 vs −0.006)
    (-0.5, -0.2, 0.2),  # a short made smaller
    (1.0, 0.0004, 0.0),  # below a lot
])  # fmt: skip
def test_hedge_size_respects_the_lot_and_the_minimum_position(position: float, delta: float, size: float) -> None:
    from offchain.keeper.hedge import _hedge_size

    got = _hedge_size(round(position * 10**18), delta, 10**16)
    assert got == round(size * 10**18) and got % 10**15 == 0
    after = round(position * 10**18) - (got if delta > 0 else -got)
    assert after == 0 or abs(after) >= 10**16


def test_keeper_cli_has_its_options_and_the_replay_command() -> None:
    """``pmsim keeper`` keeps its options (the process an operator runs) beside ``pmsim keeper replay``."""
    from typer.testing import CliRunner

    from offchain.cli import app

    runner = CliRunner()
    top = runner.invoke(app, ["keeper", "-h"], terminal_width=200)
    assert top.exit_code == 0 and "--recompute" in top.output and "--dry-run" in top.output
    assert "replay" in top.output
    sub = runner.invoke(app, ["keeper", "replay", "-h"], terminal_width=200)
    assert sub.exit_code == 0 and "--full" in sub.output and "--report" in sub.output
    bad = runner.invoke(app, ["keeper", "--config", "/nonexistent/keeper.toml", "--once"])
    assert bad.exit_code != 0 and "config" in bad.output
