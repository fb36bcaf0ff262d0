"""Bad settings files are refused before anything acts: one short error naming the file, the field (or line)
and the value, a non-zero exit, no traceback, nothing written. Variants of the shipped example config."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml

from tradebus.configs.schema import ConfigError, load_config
from tradebus.configs.yamlfile import MAX_BYTES

from .proc import run_tradebus

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "sma_cross_btc_5m.yaml"
TEXT = EXAMPLE.read_text()


def _variant(old: str, new: str) -> str:
    assert old in TEXT, old
    return TEXT.replace(old, new, 1)


BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1, 2, 3, 4, 5, 6, 7, 8, 9'}]\n"
               for i in range(9))

def _line_of(text: str) -> int:
    """The example's line number of the first line starting with ``text``."""
    return next(i for i, line in enumerate(TEXT.splitlines(), start=1) if line.lstrip().startswith(text))


# (name, file text, what the error must say)
CASES = [
    ("feb30", _variant("start: 2025-01-01", "start: 2025-02-30"), ["windows.hygiene.start", "2025-02-30"]),
    ("month13", _variant("end: 2026-07-21", "end: 2026-13-01"), ["windows.test.end", "2026-13-01"]),
    ("duplicate key", TEXT + "fill: on_close\n", [f"line {len(TEXT.splitlines()) + 1}", "'fill' is given twice",
                                                   f"first on line {_line_of('fill:')}"]),
    ("infinite capital", _variant("initial_capital: 10000", "initial_capital: .inf"), ["initial_capital", "finite"]),
    ("nan fraction", _variant("fraction: 0.95", "fraction: .nan"), ["risk.fraction", "finite"]),
    ("boolean period", _variant("fast: 10", "fast: yes"), ["fast", "a number, not the boolean True"]),
    ("huge integer", _variant("fast: 10", "fast: 99999999999999999999999"), [f"line {_line_of('params:')}",
                                                                              "out of range"]),
    ("alias bomb", BOMB + TEXT, ["aliases", "expanded"]),
    ("recursive alias", "a: &a [*a]\n" + TEXT, ["refers to itself"]),
]


@pytest.mark.parametrize("name,text,says", CASES, ids=[c[0] for c in CASES])
def test_a_bad_config_is_one_clear_error(tmp_path, name, text, says):
    path = tmp_path / "bad.yaml"
    path.write_text(text)

    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path)

    message = str(err.value)
    # A hang guard, not a speed test: expanding the bomb would take minutes and gigabytes.
    assert time.perf_counter() - t0 < 60, "refused without expanding anything"
    assert message.startswith(str(path)) and len(message) < 1500, message
    for part in says:
        assert part in message, f"{part!r} not in: {message}"


def test_encodings_sizes_and_unreadable_files(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(TEXT.replace("The classic", "Le classique \xe9").encode("latin-1"))
    big = tmp_path / "big.yaml"
    big.write_text(TEXT + "#" * MAX_BYTES)
    cases = [(latin, "not UTF-8 text"), (big, "at most 1,048,576"), (tmp_path / "missing.yaml", "cannot read"),
             (tmp_path, "cannot read")]
    for path, says in cases:
        with pytest.raises(ConfigError, match=says):
            load_config(path)


def test_the_example_and_yaml_it_may_use_still_load(tmp_path):
    assert load_config(EXAMPLE).system == "sma_cross_btc_5m"
    anchors = tmp_path / "anchors.yaml"  # anchors and merge keys are fine within the bounds
    anchors.write_text(TEXT.replace("costs: {", "costs: &costs {") + "x_note: *costs\n")
    with pytest.raises(ConfigError, match="x_note"):  # an unknown key, named, rather than a YAML error
        load_config(anchors)


def test_the_cli_refuses_without_a_traceback_and_writes_nothing(tmp_path):
    store = tmp_path / "events.sqlite"
    for name, text, says in (CASES[0], CASES[2], CASES[7]):
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text)
        done = run_tradebus("replay", str(path), "--store", str(store), "--out", str(tmp_path / "out"),
                            env={"TRADEBUS_HOME": str(tmp_path / "home")})
        assert done.returncode != 0, name
        assert "Traceback" not in done.stderr and len(done.stderr) < 2000, done.stderr
        assert says[0] in done.stderr, done.stderr
    assert not store.exists() and not (tmp_path / "out").exists()
    home = tmp_path / "home"  # nor anything in the data home (market data, experiments, runs)
    assert not home.exists() or not [p for p in home.rglob("*") if p.is_file()], list(home.rglob("*"))


async def test_publish_checks_every_line_before_sending_any(tmp_path, nats_server, make):
    from tradebus.bus import codec
    from tradebus.bus import events as ev
    from tradebus.bus.nats import NatsBus

    good = codec.to_json(make.bar(close=1.0)).decode()
    record = json.loads(good)
    bad_lines = {
        "empty id": {**record, "id": ""},
        "negative time": {**record, "ts_event": -5},
        "time past int64": {**record, "ts_init": 2**63},
        "system NATS cannot route": codec.to_builtins(ev.Signal(
            id="01J0000000000000000000000A", ts_event=1, ts_init=1, system="a b", strategy="s", symbol="X",
            timeframe="5m", direction="long")),
        "oversized payload": codec.to_builtins(ev.RunStarted(
            id="01J0000000000000000000000B", ts_event=1, ts_init=1, system="s", mode="replay",
            manifest={"blob": "x" * (1 << 20)})),
    }
    bus = await NatsBus.connect(nats_server.url)
    sub = await bus.subscribe("tb.>")
    try:
        for name, line in bad_lines.items():
            feed = tmp_path / "feed.jsonl"
            feed.write_text(f"{good}\n{json.dumps(line)}\n{good}\n")  # the bad line after a good one

            done = await asyncio.to_thread(run_tradebus, "publish", str(feed), "--nats-url", nats_server.url)

            assert done.returncode != 0, name
            assert "Traceback" not in done.stderr and len(done.stderr) < 2000, done.stderr
            assert f"{feed}:2:" in done.stderr and "nothing published" in done.stderr, (name, done.stderr)
        await bus.flush()
        with pytest.raises(TimeoutError):
            await sub.next(0.5)  # not even the good line before the bad one went out
    finally:
        await bus.close()


JOB = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "sma_cross_quick.yaml"


def _job(edit) -> dict:
    data = yaml.safe_load(JOB.read_text())
    edit(data)
    return data


JOB_CASES = [
    ("random without samples", lambda d: d["tasks"][0].update(space="random"), "samples > 0"),
    ("range without a step", lambda d: d["tasks"][0]["params"].update(fast={"min": 5, "max": 50}), "needs a step"),
    ("non-finite bound", lambda d: d["tasks"][0]["params"].update(fast={"min": float("nan"), "max": 50, "step": 5}),
     "finite"),
    ("200 million trials", lambda d: d["tasks"][0]["params"].update(fast={"min": 1, "max": 10_000, "step": 1},
                                                                    slow={"min": 2, "max": 10_000, "step": 1}),
     "at most 2,000,000"),
    ("a range of 10**18 values", lambda d: d["tasks"][0]["params"].update(fast={"min": 0, "max": 1e9, "step": 1e-9}),
     "at most 2,000,000"),
    ("reversed window", lambda d: d["tasks"][0].update(window="2025-06-01:2025-01-01"), "END must be after START"),
    ("impossible window", lambda d: d["tasks"][0].update(window="2025-02-30:2025-06-01"), "2025-02-30"),
]


@pytest.mark.parametrize("name,edit,says", JOB_CASES, ids=[c[0] for c in JOB_CASES])
def test_a_bad_sweep_job_is_refused_when_read(name, edit, says):
    from tradebus.factory.sweep import parse_job

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=says):
        parse_job(_job(edit), "job.yaml")
    assert time.perf_counter() - t0 < 60  # a hang guard: listing 10**18 range values would never end


PLAN_CASES = [
    ("a base field that does not exist", lambda d: d["base"].update(nonsense=1), "none of its", "nonsense"),
    ("a negative fee through a dotted name", lambda d: d["tasks"][0]["params"].update(**{"costs.taker_fee": -0.1}),
     "none of its", "taker_fee"),
    ("a symbol with no candles", lambda d: d["tasks"][0].update(symbols=["NOPEUSDT"]), "NOPEUSDT", "data import"),
]


@pytest.mark.parametrize("name,edit,first,second", PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_a_job_that_would_run_nothing_is_refused_before_it_runs(name, edit, first, second):
    from tradebus.engine.marketdata import SeriesKey
    from tradebus.factory.market import MemoryMarket
    from tradebus.factory.sweep import parse_job, plan

    from tradebus.replay.checks import random_walk as synthetic

    mem = MemoryMarket({SeriesKey("bybit", "linear", s, "5m"): synthetic(2_000, seed=i)
                        for i, s in enumerate(("BTCUSDT", "ETHUSDT"))})
    job = parse_job(_job(edit), "job.yaml")
    with pytest.raises(ConfigError) as err:
        plan(job, mem)
    assert first in str(err.value) and second in str(err.value), str(err.value)


def test_a_key_the_venue_refuses_is_one_line_not_a_traceback(tmp_path):
    from .livekit import start_venue

    venue = start_venue(history=120, tf="5m")
    try:
        done = run_tradebus("demo", str(EXAMPLE), "--store", str(tmp_path / "demo.sqlite"), "--rest-url",
                            venue.rest.url, "--public-ws", venue.ws.public_url, "--private-ws", venue.ws.private_url,
                            env={"TRADEBUS_HOME": str(tmp_path / "home"), "TRADEBUS_DEMO_API_KEY": "key-not-known",
                                 "TRADEBUS_DEMO_API_SECRET": "secret-not-known"})
    finally:
        venue.close()
    assert done.returncode != 0 and "Traceback" not in done.stderr and len(done.stderr) < 3000, done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("error: the venue refused the API key"), done.stderr
    assert "secret-not-known" not in done.stderr + done.stdout
