"""The command line, run as a user runs it: real subprocesses, a real NATS server, real store files."""

from __future__ import annotations

import json

import duckdb
import pytest

from tradebus.bus import codec, subjects
from tradebus.bus.nats import NatsBus
from tradebus.configs.schema import load_config
from tradebus.eventstore.store import EventStore
from tradebus.tests.samples import one_of_each

from .proc import LineReader, run_tradebus, tradebus


@pytest.fixture
def filled_store(tmp_path, make):
    path = tmp_path / "events.sqlite"
    with EventStore.open_writer(path) as st:
        st.append([make.bar(close=100.0 + i) for i in range(10)])
        st.append(one_of_each())
        st.append([make.intent("alpha", "o1"), make.fill("alpha", "o1", "x1", "buy", 1.0, 100.0, fee=0.05)])
    return path


def test_help_lists_the_commands():
    result = run_tradebus("--help")

    assert result.returncode == 0
    for command in ("tail", "store", "rebuild", "nats"):
        assert command in result.stdout


async def test_tail_json_prints_matching_events_in_order(nats_server, make):
    proc = tradebus("tail", "md.bar.>", "--json", "--count", "3", "--nats-url", nats_server.url)
    LineReader(proc.stderr).wait_for("tailing", timeout=20)
    bus = await NatsBus.connect(nats_server.url)
    sent = [make.bar(close=float(i)) for i in range(3)]

    await bus.publish(make.signal("alpha"))  # not a bar: filtered out by the pattern
    for e in sent:
        await bus.publish(e)
    await bus.flush()
    stdout, _ = proc.communicate(timeout=20)
    await bus.close()

    assert proc.returncode == 0
    assert [codec.from_json(line) for line in stdout.splitlines()] == sent


async def test_tail_system_filter_prints_readable_lines(nats_server, make):
    proc = tradebus("tail", "--system", "alpha", "--count", "2", "--nats-url", nats_server.url)
    LineReader(proc.stderr).wait_for("tailing", timeout=20)
    bus = await NatsBus.connect(nats_server.url)

    await bus.publish(make.signal("beta"))
    await bus.publish(make.signal("alpha", direction="short"))
    await bus.publish(make.fill("alpha", "o-7", "x-9", "sell", 0.5, 101.5, fee=0.02))
    await bus.flush()
    stdout, _ = proc.communicate(timeout=20)
    await bus.close()

    lines = stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 2
    assert "signal" in lines[0] and "alpha" in lines[0] and "-> short" in lines[0]
    assert "fill" in lines[1] and "sell 0.5 BTCUSDT @ 101.5" in lines[1] and "x-9" in lines[1]
    assert "beta" not in stdout


def test_tail_without_a_server_says_what_to_do(tmp_path):
    result = run_tradebus("tail", env={"TRADEBUS_HOME": str(tmp_path / "nohome")})

    assert result.returncode == 1
    assert "tradebus nats" in result.stderr


async def test_tail_finds_the_server_started_by_tradebus_nats(tmp_path, make):
    env = {"TRADEBUS_HOME": str(tmp_path / "home")}
    server = tradebus("nats", env=env)
    try:
        url = LineReader(server.stdout).wait_for("ready at", 20).split("ready at ")[1].split()[0]
        tail = tradebus("tail", "--json", "--count", "1", env=env)
        LineReader(tail.stderr).wait_for("tailing", timeout=20)
        bus = await NatsBus.connect(url)
        e = make.bar()
        await bus.publish(e)
        await bus.flush()
        stdout, _ = tail.communicate(timeout=20)
        await bus.close()
    finally:
        server.terminate()
        server.wait(15)

    assert codec.from_json(stdout.strip()) == e


def test_store_info_json_reports_counts(filled_store):
    result = run_tradebus("store", "info", "--store", str(filled_store), "--json")

    info = json.loads(result.stdout)
    assert result.returncode == 0
    assert info["count"] == 10 + len(one_of_each()) + 2
    assert info["by_type"]["bar"] == 11
    assert info["writer_pid"] is None


def test_store_verify_passes_on_a_good_store(filled_store):
    result = run_tradebus("store", "verify", "--store", str(filled_store))

    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_store_export_parquet_round_trips_through_duckdb(filled_store, tmp_path):
    dest = tmp_path / "out" / "events.parquet"

    result = run_tradebus("store", "export", str(dest), "--store", str(filled_store), "--type", "fill")

    assert result.returncode == 0, result.stderr
    rows = duckdb.sql(f"SELECT system, payload->>'exec_id', (payload->>'fee')::DOUBLE FROM '{dest}' ORDER BY seq").fetchall()
    assert rows == [("ema_rsi_btc", "e-1", 0.0000099), ("alpha", "x1", 0.05)]
    assert not list(dest.parent.glob("*.tmp"))


def test_store_export_rejects_unknown_format(filled_store, tmp_path):
    result = run_tradebus("store", "export", str(tmp_path / "x"), "--store", str(filled_store), "--format", "xls")

    assert result.returncode == 1
    assert "xls" in result.stderr and "parquet" in result.stderr
    assert not (tmp_path / "x").exists()


def test_store_query_runs_sql_over_events(filled_store):
    result = run_tradebus(
        "store", "query", "SELECT type, count(*) AS n FROM events WHERE type LIKE 'order.%' GROUP BY type ORDER BY type",
        "--store", str(filled_store),
    )

    assert result.returncode == 0, result.stderr
    assert "order.intent" in result.stdout and "order.rejected" in result.stdout


def test_store_query_error_is_reported(filled_store):
    result = run_tradebus("store", "query", "SELECT nope FROM events", "--store", str(filled_store))

    assert result.returncode == 1
    assert "query failed" in result.stderr


def test_rebuild_twice_prints_the_same_hash(filled_store):
    first = run_tradebus("rebuild", "--store", str(filled_store))
    second = run_tradebus("rebuild", "--store", str(filled_store))

    hashes = [next(l for l in r.stdout.splitlines() if l.startswith("state hash")) for r in (first, second)]
    assert first.returncode == 0 and second.returncode == 0
    assert hashes[0] == hashes[1] and len(hashes[0].split()[-1]) == 64
    assert "position alpha BTCUSDT" in first.stdout


def test_missing_store_is_a_clear_error(tmp_path):
    result = run_tradebus("store", "info", "--store", str(tmp_path / "none.sqlite"))

    assert result.returncode == 1
    assert "no event store" in result.stderr


def test_walkthrough_nats_record_tail_publish_info_rebuild(tmp_path, make):
    """The issue's done-means, as a user runs it: five processes around one embedded server."""
    env = {"TRADEBUS_HOME": str(tmp_path / "home")}
    events = [make.bar(close=float(i)) for i in range(50)] + one_of_each()
    kept = [e for e in events if subjects.captured(subjects.subject_for(e))]  # sweep work has its own stream
    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(codec.to_json(e).decode() + "\n" for e in events))
    server = tradebus("nats", env=env)
    try:
        LineReader(server.stdout).wait_for("ready at", 20)
        recorder = tradebus("record", env=env)
        rec_log = LineReader(recorder.stderr)
        rec_log.wait_for("recording", 20)
        tail = tradebus("tail", "--json", "--count", str(len(events)), env=env)
        LineReader(tail.stderr).wait_for("tailing", 20)

        published = run_tradebus("publish", str(feed), env=env)
        tailed, _ = tail.communicate(timeout=20)
        info = {}
        for _ in range(100):  # the recorder commits asynchronously; poll from this second process
            info = json.loads(run_tradebus("store", "info", "--json", env=env).stdout)
            if info["count"] == len(kept):
                break

        recorder.send_signal(2)  # Ctrl-C: drain, commit, exit
        summary = rec_log.wait_for("recorded", 20)
        recorder.wait(20)
    finally:
        server.terminate()
        server.wait(15)

    assert published.returncode == 0, published.stderr
    assert [codec.from_json(line) for line in tailed.splitlines()] == events
    assert info["count"] == len(kept) and info["writer_pid"] == recorder.pid
    assert recorder.returncode == 0 and f"recorded {len(kept)} events" in summary
    hashes = {run_tradebus("rebuild", "--json", env=env).stdout for _ in range(2)}
    assert len(hashes) == 1 and json.loads(hashes.pop())["events"] == len(kept)


def test_publish_refuses_a_file_with_a_bad_line(tmp_path, make, nats_server):
    feed = tmp_path / "feed.jsonl"
    feed.write_text(codec.to_json(make.bar()).decode() + "\n" + '{"type": "bar", "id": "x"}\n')

    result = run_tradebus("publish", str(feed), "--nats-url", nats_server.url)

    assert result.returncode == 1
    assert "feed.jsonl:2" in result.stderr and "nothing published" in result.stderr


def test_init_writes_a_starter_config_and_says_which_data_to_fetch(md, tmp_path):
    md.close()  # 20 days of 5m BTCUSDT and ETHUSDT candles, no funding or marks
    db = str(tmp_path / "m.duckdb")
    made = run_tradebus("init", "--dir", str(tmp_path / "sys"), "--symbol", "BTCUSDT", "--timeframe", "1h",
                        "--strategy", "sma_cross", "--db", db)
    assert made.returncode == 0, made.stderr
    config = load_config(tmp_path / "sys" / "sma_cross_btcusdt_1h.yaml")
    assert (config.symbol, config.timeframe, config.strategy.id) == ("BTCUSDT", "1h", "sma_cross")
    assert config.params() == config.strategy_def().params()  # the strategy's defaults, written out
    # 1h is resampled from the stored 5m candles: only funding and marks are to fetch.
    assert "candles bybit/linear BTCUSDT 5m: 5,760 rows stored" in made.stdout
    assert "--timeframe 1h --start" not in made.stdout
    assert "tradebus data fetch --symbol BTCUSDT --no-candles --funding" in made.stdout
    assert "tradebus data fetch --symbol BTCUSDT --no-candles --mark --mark-timeframe 1h" in made.stdout

    fresh = run_tradebus("init", "--dir", str(tmp_path / "sys"), "--symbol", "SOLUSDT", "--db",
                         str(tmp_path / "none.duckdb"))
    assert fresh.returncode == 0 and "tradebus data fetch --symbol SOLUSDT --timeframe 1h --start" in fresh.stdout

    again = run_tradebus("init", "--dir", str(tmp_path / "sys"), "--symbol", "BTCUSDT", "--timeframe", "1h",
                         "--strategy", "sma_cross", "--db", db)
    unknown = run_tradebus("init", "--dir", str(tmp_path / "x"), "--strategy", "nope")
    assert unknown.returncode == 1 and "--strategy: unknown strategy 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    bad = run_tradebus("init", "--dir", str(tmp_path / "x"), "--timeframe", "7m")
    assert again.returncode == 1 and "already exists; nothing written" in again.stderr
    assert bad.returncode == 1 and "timeframe '7m'; allowed: 1m" in bad.stderr and not (tmp_path / "x").exists()
    assert "Traceback" not in again.stderr + bad.stderr
