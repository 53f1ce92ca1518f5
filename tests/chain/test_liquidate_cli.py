"""``pmsim liquidate start | bid | status`` against the suite's Anvil and a running engine: what they
print is what the chain recorded; bad input is refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from offchain.chain.deploy import write_deployment
from offchain.cli import app
from offchain.engine.service import Engine
from offchain.errors import InputError
from tests.chain.conftest import CAROL
from tests.chain.harness import Harness
from tests.chain.test_engine_liquidation import crash, leveraged_book

pytestmark = pytest.mark.chain


def pmsim(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def refused(result: Result, field: str) -> str:
    assert isinstance(result.exception, InputError), result.output
    assert result.exception.field == field, result.exception
    return str(result.exception)


def test_start_bid_and_status_by_hand(h: Harness, engine: Engine, api: str, tmp_path: Path) -> None:
    """``start`` from the engine's list and from a published round file; ``status`` shows the snapshot;
    ``bid`` prints the fraction, price, discount, fee and fund draw of the Bid event it sent."""
    longs = leveraged_book(h)
    crash(h, 0.85)
    result = engine.run_round()
    assert result is not None
    dep = str(write_deployment(h.p, tmp_path / "suite.json"))
    common = ("--deployment", dep)
    alice, dave, erin = longs["alice"], longs["dave"], longs["erin"]

    assert pmsim("liquidate", "status", alice, *common).output.strip() == f"{alice}: no auction"
    refused(pmsim("liquidate", "start", erin, "--engine", api, *common), "account")  # healthy
    refused(pmsim("liquidate", "start", "0x1234", "--engine", api, *common), "account")

    out = pmsim("liquidate", "start", alice, "--engine", api, "--key", CAROL, *common)
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"started the liquidation of {alice}") and "solvent" in out.output
    assert h.p.liquidator.functions.auctionOf(alice).call()[0]
    # from the published leaves alone (no engine): the round's document the engine wrote
    round_file = str(tmp_path / "engine" / "rounds" / f"{result.round}.json")
    refused(pmsim("liquidate", "start", erin, "--round-file", round_file, *common), "account")
    out = pmsim("liquidate", "start", dave, "--round-file", round_file, "--key", CAROL, *common)
    assert out.exit_code == 0, out.output
    assert h.p.liquidator.functions.auctionOf(dave).call()[0]

    status = pmsim("liquidate", "status", alice, *common).output
    assert "discount now" in status and "max fraction now" in status and "version 0" in status

    refused(pmsim("liquidate", "bid", alice, "--fraction", "1.5", "--max-price", "1", *common), "fraction")
    refused(pmsim("liquidate", "bid", alice, "--fraction", "0.1", "--max-price", "abc", *common), "max_price")
    low = pmsim("liquidate", "bid", alice, "--fraction", "0.1", "--max-price", "1", "--engine", api, "--key", CAROL,
                *common)  # fmt: skip
    assert "price" in refused(low, "max_price")
    out = pmsim("liquidate", "bid", alice, "--fraction", "10%", "--max-price", "100000", "--engine", api,
                "--key", CAROL, *common)  # fmt: skip
    assert out.exit_code == 0, out.output
    [ev] = [dict(e["args"]) for e in h.p.liquidator.events.Bid().get_logs(from_block=h.p.w3.eth.block_number)]
    assert ev["fractionWad"] == 10**17
    lines = out.output
    assert "fraction taken 10.0000 %" in lines
    assert f"price paid {ev['price'] / 10**6:,.6f} USD" in lines
    assert f"liquidation fee to the insurance fund {ev['fee'] / 10**6:,.6f} USD" in lines
    assert "insurance fund draw 0.000000 USD, socialised loss 0.000000 USD" in lines
    assert "auction goes on" in lines and "max fraction now" in lines
    h.check_conservation()
