"""Property: whatever a client sends to the engine's HTTP API, it gets a 2xx or a 4xx naming the
field at fault — never a 5xx, never a traceback in the server's log — and whatever is signed is
something the contracts would accept (on the lot and tick grids, within the size and price limits,
margin at least the requirement).

A real engine over a real Anvil devnet (the fixtures of ``test_engine``), real signatures.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offchain.engine.checks import check_trade
from offchain.engine.service import Engine
from offchain.errors import InputError
from offchain.protocol import MAX_PRICE, MAX_SIZE
from tests.chain.conftest import ALICE, BOB, addr
from tests.chain.harness import USDC, Harness
from tests.chain.test_engine import CALL, PERP, U, engine_trade

HOSTILE = st.one_of(
    st.sampled_from([None, True, False, "", " ", "1e400", "-1e400", "1e999999", "NaN", "Infinity", "-0", "0x",
                     "0.0001", "1000000", "1e30", "1e12", "1e13", "0.001", "-0.001", 10**30, 2**256, -(2**255),
                     10**4000, 1e308, -1e308, 5e-324, [], {}, [1, 2], {"a": 1}, "maker", "USDC", "WETH",
                     "0x" + "00" * 20, "0x" + "ff" * 20, "\x00", "ü" * 50]),
    st.integers(), st.floats(), st.text(max_size=40), st.decimals().map(str),
)  # fmt: skip
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6).map(lambda k: f"{k / 1000:.3f}"),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    HOSTILE,
)
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


def _post(url: str, data: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _check(status: int, doc: Any, eng: Engine) -> None:
    assert status < 500, doc
    if status != 200:
        assert 400 <= status < 500 and isinstance(doc.get("field"), str) and doc["field"], doc
        assert isinstance(doc.get("error"), str) and "Traceback" not in doc["error"], doc
        return
    att = doc["attestation"]
    need = eng.quorum()
    assert len(bytes.fromhex(doc["signatures"][2:])) == 65 * need
    equity, im, mm = int(att["margin_equity"]), int(att["initial_margin"]), int(att["maintenance_margin"])
    assert equity >= min(im, mm)  # never a result the contract's margin test would refuse


@pytest.fixture
def funded(h: Harness, engine: Engine, api: str) -> Harness:
    h.deposit(ALICE, "USDC", 100_000 * USDC)
    h.deposit(BOB, "USDC", 100_000 * USDC)
    engine_trade(h, api, ALICE, BOB, PERP, False, U, "55000")  # both sides hold a position
    return h


@st.composite
def trade_bodies(draw: st.DrawFn, ids: list[int]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account": draw(st.one_of(st.sampled_from([addr(ALICE), addr(BOB), addr(ALICE).lower()]), HOSTILE)),
        "instrument": draw(st.one_of(st.sampled_from(ids), st.integers(-5, 10**12), HOSTILE)),
        "size": draw(NUMBERS),
        "price": draw(st.one_of(st.sampled_from(["55000", "1250", "0.001", "1e12", "1000000000001"]), NUMBERS)),
        "role": draw(st.one_of(st.sampled_from(["maker", "taker"]), HOSTILE)),
    }
    return _mutilate(draw, body)


@st.composite
def withdraw_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account": draw(st.one_of(st.sampled_from([addr(ALICE), addr(BOB)]), HOSTILE)),
        "token": draw(st.one_of(st.sampled_from(["USDC", "WETH", "WBTC"]), HOSTILE)),
        "amount": draw(NUMBERS),
    }
    return _mutilate(draw, body)


def _mutilate(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    if draw(st.booleans()):
        return body
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=2, unique=True)):
        del body[key]
    if draw(st.booleans()):
        body[draw(st.text(max_size=10))] = draw(HOSTILE)
    return body


@FUZZ
@given(data=st.data())
def test_the_http_api_never_answers_5xx(funded: Harness, engine: Engine, api: str, data: st.DataObject,
                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    ids = list(funded.ids.values())
    with caplog.at_level(logging.ERROR, logger="pmsim"):
        kind = data.draw(st.sampled_from(["trade", "withdraw", "raw"]))
        if kind == "trade":
            body = data.draw(trade_bodies(ids))
            status, doc = _post(api + "/attest/trade", json.dumps(body, allow_nan=True).encode())
            if status == 200:
                a = doc["attestation"]
                assert a["account"].lower() == str(body["account"]).lower()
        elif kind == "withdraw":
            body = data.draw(withdraw_bodies())
            status, doc = _post(api + "/attest/withdraw", json.dumps(body, allow_nan=True).encode())
        else:
            path = data.draw(st.sampled_from(["/attest/trade", "/attest/withdraw", "/nope", "/attest/trade/"]))
            raw = data.draw(st.one_of(
                st.binary(max_size=100), st.sampled_from([b"[" * 5000 + b"]" * 5000, b"1" * 5000, b'{"size": ' +
                                                          b"9" * 5000 + b"}", b"[]", b"null", b'"x"', b"{}"]),
            ))  # fmt: skip
            status, doc = _post(api + path, raw)
        _check(status, doc, engine)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_the_issue_s_inputs_get_a_4xx_naming_the_field(funded: Harness, engine: Engine, api: str) -> None:
    perp, call = funded.ids[PERP], funded.ids[CALL]
    base = {"account": addr(ALICE), "instrument": perp, "size": "1", "price": "55000", "role": "taker"}
    cases = [
        ({"size": "1e400"}, 400, "size"), ({"price": "1e400"}, 400, "price"), ({"size": "1e999999"}, 400, "size"),
        ({"price": "1e999999"}, 400, "price"), ({"size": "1000000"}, 422, "size"),  # 1,000,000 BTC: no margin
        ({"size": str(MAX_SIZE // U + 1)}, 400, "size"), ({"price": str(MAX_PRICE // U + 1)}, 400, "price"),
        ({"size": "0.0005"}, 400, "size"), ({"price": "55000.0005"}, 400, "price"),
        ({"size": "0.005", "instrument": call}, 400, "size"),  # a new position below minPositionSize
        ({"size": "0"}, 400, "size"), ({"instrument": 77}, 400, "instrument"),
    ]  # fmt: skip
    for change, status, field in cases:
        got, doc = _post(api + "/attest/trade", json.dumps(base | change).encode())
        assert (got, doc.get("field")) == (status, field), (change, doc)
    # Alice is short 1 BTC: buying 0.995 back would leave 0.005, below the minimum; buying 1 closes it
    got, doc = _post(api + "/attest/trade", json.dumps(base | {"size": "0.995"}).encode())
    assert (got, doc.get("field")) == (400, "size"), doc
    got, doc = _post(api + "/attest/trade", json.dumps(base | {"size": "1"}).encode())
    assert got == 200, doc
    for amount, status in (("1e400", 400), ("1e999999", 400), ("0", 400), ("-1", 400), ("0.0000001", 400),
                           ("10000000", 400), ("1", 200)):  # fmt: skip
        body = {"account": addr(ALICE), "token": "USDC", "amount": amount}
        got, doc = _post(api + "/attest/withdraw", json.dumps(body).encode())
        assert got == status and (status == 200 or doc["field"] == "amount"), (amount, doc)


def test_an_expired_instrument_is_refused(funded: Harness, engine: Engine, api: str) -> None:
    from offchain.chain.deploy import InstrumentSpec, list_instruments
    from offchain.chain.units import Kind

    (short_lived,) = list_instruments(funded.p, funded.deployer, [InstrumentSpec(Kind.FUTURE, 0, funded.now() + 60)])
    funded.warp(120)
    body = {"account": addr(ALICE), "instrument": short_lived, "size": "1", "price": "55000", "role": "taker"}
    got, doc = _post(api + "/attest/trade", json.dumps(body).encode())
    assert (got, doc["field"]) == (400, "instrument") and "expired" in doc["error"], doc


def test_too_many_positions_are_refused(funded: Harness, engine: Engine, api: str) -> None:
    state = engine.refresh()
    assert state.params is not None and state.params.max_positions > 1
    # Alice holds one position; with the cap at one, a second instrument is refused, the held one is not
    capped = replace(state, params=replace(state.params, max_positions=1))
    with pytest.raises(InputError) as err:
        check_trade(capped, addr(ALICE), funded.ids[CALL], U, 1_250 * U)
    assert err.value.field == "instrument" and "maxPositions" in str(err.value)
    check_trade(capped, addr(ALICE), funded.ids[PERP], U // 10, 55_000 * U)  # adding to a held one is fine


def test_malformed_framing_gets_a_4xx(funded: Harness, api: str) -> None:
    host, port = api.removeprefix("http://").split(":")
    for length, body in (("-5", b"{}"), ("abc", b"{}"), (str(10**6), b"")):
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(f"POST /attest/trade HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode() + body)
            head = s.recv(4096).decode(errors="replace")
        assert head.split(" ")[1] in ("400", "413"), head
