"""Market data: import, validation, resampling without leaks, checks, and fetching from a fake Bybit."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather
import pytest

from tradebus.components.timeframes import DAY, HOUR, MINUTE, WEEK, TimeframeError, bucket_start
from tradebus.live.bybit_public import BybitPublic, VenueError
from tradebus.engine.market import fill_command
from tradebus.live.bybit_wire import parse_klines
from tradebus.replay.fetch import fetch_funding, fetch_klines
from tradebus.replay.importer import ImportFormatError, read_file
from tradebus.engine.marketdata import MarketData, MarketDataError, SeriesKey
from tradebus.engine.resample import resample
from tradebus.replay.checks import T0, random_walk as synthetic

from .conftest import SHARED_DATA
from tradebus.live.fake_bybit import FakeBybit, FakeBybitState
from .proc import run_tradebus

M5 = 5 * MINUTE
BTC = SeriesKey("bybit", "linear", "BTCUSDT", "5m")


@pytest.fixture
def md(tmp_path):
    with MarketData.open(tmp_path / "market.duckdb") as m:
        yield m


# --- storage --------------------------------------------------------------------------------------


def test_write_then_read_returns_the_same_columns(md):
    cols = synthetic(500)

    assert md.write(BTC, cols) == 500
    got = md.read(BTC)

    for name, values in cols.items():
        np.testing.assert_array_equal(got[name], values)


def test_rewriting_the_same_rows_adds_nothing(md):
    cols = synthetic(300)
    md.write(BTC, cols)

    again = md.write(BTC, {k: v[100:] for k, v in cols.items()})

    assert again == 0 and md.coverage(BTC).rows == 300


def test_read_window_is_half_open(md):
    md.write(BTC, synthetic(100))

    got = md.read(BTC, T0 + 10 * M5, T0 + 20 * M5)

    assert got["open_time"][0] == T0 + 10 * M5 and len(got["open_time"]) == 10


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda c: c["high"].__setitem__(5, c["low"][5] - 1), "inconsistent OHLC"),
        (lambda c: c["open_time"].__setitem__(7, c["open_time"][7] + 1), "not on a 5m boundary"),
        (lambda c: c["close"].__setitem__(3, np.nan), "non-finite close"),
        (lambda c: c["open_time"].__setitem__(9, c["open_time"][8]), "duplicate open_time"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(md, damage, message):
    cols = synthetic(50)
    damage(cols)

    with pytest.raises(MarketDataError, match=message):
        md.write(BTC, cols)

    assert md.coverage(BTC).rows == 0


def test_check_reports_gaps_with_their_size(md):
    cols = synthetic(100)
    keep = np.ones(100, dtype=bool)
    keep[40:43] = False
    md.write(BTC, {k: v[keep] for k, v in cols.items()})

    report = md.check(BTC)

    assert not report.ok
    assert report.gaps == [(int(cols["open_time"][39]), int(cols["open_time"][43]))]
    assert report.missing_bars == 3


def test_unknown_kind_and_timeframe_are_named():
    with pytest.raises(MarketDataError, match="kind 'trades'"):
        SeriesKey("bybit", "linear", "X", "5m", "trades")
    with pytest.raises(TimeframeError, match="'7m'"):
        SeriesKey("bybit", "linear", "X", "7m")


# --- import ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED_DATA / "bybit").exists(), reason="../shared/data is absent")
def test_import_real_bybit_parquet_is_complete_and_idempotent(tmp_path):
    src = SHARED_DATA / "bybit" / "linear" / "5m" / "BTCUSDT.parquet"
    db = tmp_path / "m.duckdb"

    first = run_tradebus("data", "import", str(src), "--db", str(db))
    second = run_tradebus("data", "import", str(src), "--db", str(db))
    check = run_tradebus("data", "check", "--db", str(db))

    assert first.returncode == 0, first.stderr
    assert "163,212 new" in first.stdout and "0 new" in second.stdout
    assert check.returncode == 0 and "163,212 rows ok" in check.stdout
    with MarketData.open(db, read_only=True) as m:
        cov = m.coverage(BTC)
    assert (cov.rows, cov.first) == (163_212, T0)


def test_import_csv_with_epoch_ms_and_freqtrade_feather(tmp_path):
    cols = synthetic(20)
    csv = tmp_path / "x.csv"
    lines = ["timestamp,Open,High,Low,Close,Volume"] + [
        f"{t // 1_000_000},{o},{h},{l},{c},{v}"
        for t, o, h, l, c, v in zip(cols["open_time"], cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"])
    ]
    csv.write_text("\n".join(lines))
    feather = tmp_path / "BTC_USDT-5m.feather"
    table = pa.table({
        "date": pa.array(cols["open_time"], type=pa.timestamp("ns", tz="UTC")),
        **{k: cols[k] for k in ("open", "high", "low", "close", "volume")},
    })
    pyarrow.feather.write_feather(table, feather)

    from_csv, from_feather = read_file(csv), read_file(feather)

    for got in (from_csv, from_feather):
        np.testing.assert_array_equal(got["open_time"], cols["open_time"])
        np.testing.assert_allclose(got["close"], cols["close"], rtol=1e-15)


@pytest.mark.skipif(not (SHARED_DATA / "bybit").exists(), reason="../shared/data is absent")
def test_the_quickstart_imports_candles_marks_and_funding_with_no_options(tmp_path):
    real = SHARED_DATA / "bybit" / "linear"
    db = tmp_path / "m.duckdb"
    files = [real / "5m" / "ETHUSDT.parquet", real / "mark_1h" / "ETHUSDT.parquet", real / "funding" / "ETHUSDT.parquet"]

    done = run_tradebus("data", "import", *map(str, files), "--db", str(db))
    wrong = run_tradebus("data", "import", str(files[1]), "--timeframe", "5m", "--db", str(db))

    assert done.returncode == 0, done.stderr
    with MarketData.open(db, read_only=True) as m:
        stored = {(c.key.kind, c.key.symbol, c.key.timeframe): c.rows for c in m.series()}
    assert stored == {("candles", "ETHUSDT", "5m"): 163_212, ("mark", "ETHUSDT", "1h"): 13_601,
                      ("funding", "ETHUSDT", "-"): 1_700}
    assert "timeframe from the rows" in done.stdout and "kind from the name" in done.stdout
    assert wrong.returncode == 1 and "--timeframe says 5m but its rows are 1h apart" in wrong.stderr


def _feather(path: Path, cols: dict) -> Path:
    table = pa.table({"date": pa.array(cols["open_time"], type=pa.timestamp("ns", tz="UTC")),
                      **{k: cols[k] for k in ("open", "high", "low", "close", "volume")}})
    pyarrow.feather.write_feather(table, path)
    return path


def test_freqtrade_names_give_symbol_and_timeframe_and_the_rows_must_agree(tmp_path):
    hourly = synthetic(48, step=3_600 * 10**9)
    good = _feather(tmp_path / "SOL_USDT_USDT-1h-futures.feather", hourly)
    liar = _feather(tmp_path / "SOL_USDT_USDT-5m-futures.feather", hourly)
    db = tmp_path / "m.duckdb"

    told_wrong = run_tradebus("data", "import", str(good), "--timeframe", "5m", "--db", str(db))
    named_wrong = run_tradebus("data", "import", str(liar), "--db", str(db))
    assert not db.exists()
    done = run_tradebus("data", "import", str(good), "--db", str(db))

    assert told_wrong.returncode == 1 and "--timeframe says 5m but its rows are 1h apart" in told_wrong.stderr
    assert named_wrong.returncode == 1 and "its name says 5m but its rows are 1h apart" in named_wrong.stderr
    assert done.returncode == 0 and "candles bybit/linear SOLUSDT 1h: 48 rows" in done.stdout, done.stdout


def test_check_names_a_series_stored_under_the_wrong_timeframe_and_delete_removes_it(tmp_path):
    db = tmp_path / "m.duckdb"
    with MarketData.open(db) as m:  # what an import without the rows check let through
        m.write(SeriesKey("bybit", "linear", "BTCUSDT", "5m"), synthetic(48, step=3_600 * 10**9))
        m.write(SeriesKey("bybit", "linear", "ETHUSDT", "5m"), synthetic(600))  # 2 days and 2 hours

    check = run_tradebus("data", "check", "--db", str(db))
    part = run_tradebus("data", "delete", "--symbol", "ETHUSDT", "--timeframe", "5m", "--start", "2025-01-01",
                        "--end", "2025-01-02", "--db", str(db))
    whole = run_tradebus("data", "delete", "--symbol", "BTCUSDT", "--timeframe", "5m", "--db", str(db))
    nothing = run_tradebus("data", "delete", "--symbol", "BTCUSDT", "--timeframe", "5m", "--db", str(db))

    assert check.returncode == 1 and "likely cause: its rows are 1h apart" in check.stdout, check.stdout
    assert "tradebus data delete --symbol BTCUSDT --kind candles --timeframe 5m" in check.stdout
    assert whole.returncode == 0 and "deleted 48 rows" in whole.stdout
    assert nothing.returncode == 1 and "no rows stored" in nothing.stderr
    listed = [json.loads(line) for line in run_tradebus("data", "list", "--json", "--db", str(db)).stdout.splitlines()]
    left = {row["symbol"]: row["rows"] for row in listed}
    assert "BTCUSDT" not in left and part.returncode == 0 and "deleted 288 rows" in part.stdout
    assert left["ETHUSDT"] == 600 - 288


def test_import_of_a_file_without_close_names_file_column_and_allowed(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("open_time,open,high,low,price,volume\n1735689600000,1,2,0.5,1.5,3\n")
    db = tmp_path / "m.duckdb"

    result = run_tradebus("data", "import", str(bad), "--symbol", "BTCUSDT", "--db", str(db))

    assert result.returncode == 1
    assert "bad.csv" in result.stderr and "'close'" in result.stderr and "nothing imported" in result.stderr
    assert not db.exists()


def test_import_rejects_unknown_file_type(tmp_path):
    with pytest.raises(ImportFormatError, match=r"\.xlsx"):
        read_file(tmp_path / "x.xlsx")


# --- resampling -------------------------------------------------------------------------------------


def reference_resample(cols, target_len, offset=0):
    """Group with a plain loop: the obviously-correct version."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(cols["open_time"]):
        groups.setdefault((int(t) - offset) // target_len * target_len + offset, []).append(i)
    out = []
    for start, idx in groups.items():
        out.append((start, cols["open"][idx[0]], max(cols["high"][idx]), min(cols["low"][idx]),
                    cols["close"][idx[-1]], sum(cols["volume"][idx])))
    return out


@pytest.mark.parametrize(("target", "length"), [("15m", 15 * MINUTE), ("1h", HOUR), ("4h", 4 * HOUR), ("1d", DAY)])
def test_resample_matches_a_plain_loop_and_drops_the_open_bucket(target, length):
    cols = synthetic(24 * 12 * 3 + 7, start=T0 + 3 * M5)  # starts mid-bucket, ends with a partial bucket

    got = resample(cols, "5m", target)
    expected = reference_resample(cols, length)
    last_close = cols["open_time"][-1] + M5
    expected = [row for row in expected if row[0] + length <= last_close]

    assert len(got["open_time"]) == len(expected)
    for i, (start, o, h, l, c, v) in enumerate(expected):
        assert got["open_time"][i] == start
        assert (got["open"][i], got["high"][i], got["low"][i], got["close"][i]) == (o, h, l, c)
        assert got["volume"][i] == pytest.approx(v, rel=1e-12)
    assert got["open_time"][-1] + length <= last_close


def test_daily_and_weekly_buckets_align_to_utc_midnight_and_monday():
    assert bucket_start(T0 + 13 * HOUR, "1d") == T0
    monday = T0 - 2 * DAY  # 2024-12-30 was a Monday
    assert bucket_start(T0 + 13 * HOUR, "1w") == monday
    assert bucket_start(monday + WEEK - 1, "1w") == monday


def test_resample_into_a_non_multiple_is_refused():
    with pytest.raises(TimeframeError, match="multiple"):
        resample(synthetic(10), "5m", "3m")


# --- fetching ---------------------------------------------------------------------------------------


@pytest.fixture
def fake():
    cols = synthetic(3_000)
    now_ms = int((cols["open_time"][-1] + 2 * MINUTE) // 1_000_000)  # the last candle is still open
    hourly = resample(cols, "5m", "1h")
    funding_t = np.arange(T0 + 8 * HOUR, int(cols["open_time"][-1]), 8 * HOUR, dtype=np.int64)
    state = FakeBybitState(
        now_ms=now_ms,
        candles={("BTCUSDT", "5m"): cols},
        marks={("BTCUSDT", "1h"): {k: hourly[k] for k in ("open_time", "open", "high", "low", "close")}},
        funding={"BTCUSDT": {"open_time": funding_t, "rate": np.linspace(-1e-4, 2e-4, len(funding_t))}},
    )
    server = FakeBybit.start(state)
    yield server, cols
    server.stop()


def test_parse_klines_sorts_newest_first_rows_and_drops_the_open_candle():
    rows = [["1735690200000", "3", "4", "2", "3.5", "10", "35"], ["1735689900000", "2", "3", "1", "2.5", "5", "12"],
            ["1735689600000", "1", "2", "0.5", "1.5", "7", "10"]]

    cols = parse_klines(rows, False, "5m", now_ns=1_735_690_200_000 * 1_000_000 + 60 * 10**9)

    assert list(cols["open_time"] // 1_000_000) == [1735689600000, 1735689900000]
    assert list(cols["close"]) == [1.5, 2.5] and list(cols["turnover"]) == [10.0, 12.0]


def test_fetch_gets_every_closed_candle_through_real_pybit(fake, md):
    server, cols = fake
    client = BybitPublic(endpoint=server.url, max_rps=1000)
    calls = []

    result = fetch_klines(client, md, BTC, T0, T0 + 11 * DAY, progress=lambda d, t: calls.append((d, t)))

    got = md.read(BTC)
    np.testing.assert_array_equal(got["open_time"], cols["open_time"][:-1])  # the open candle is not stored
    np.testing.assert_array_equal(got["close"], cols["close"][:-1])
    np.testing.assert_array_equal(got["turnover"], cols["turnover"][:-1])
    assert result.new_rows == len(cols["open_time"]) - 1 and result.chunks == 3
    assert calls == [(1, 3), (2, 3), (3, 3)]
    kline_requests = [q for path, q in server.state.requests if path == "/v5/market/kline"]
    assert all(q["limit"] == "1000" and q["interval"] == "5" and q["category"] == "linear" for q in kline_requests)


def test_a_fetch_killed_midway_resumes_without_refetching(fake, md):
    server, cols = fake
    client = BybitPublic(endpoint=server.url, max_rps=1000)
    state = server.state
    done_before_fault = []

    def progress(done, total):
        done_before_fault.append(done)
        if done == 1:  # the second page fails hard (HTTP 403, as when Bybit bans an IP)
            state.fail_next.append((403, 0, ""))

    with pytest.raises(VenueError, match="403"):
        fetch_klines(client, md, BTC, T0, T0 + 11 * DAY, progress=progress)
    stored = md.coverage(BTC).rows
    n_requests = len(state.requests)

    result = fetch_klines(client, md, BTC, T0, T0 + 11 * DAY)

    assert stored == 1000 and done_before_fault == [1]
    assert result.skipped == 1 and md.coverage(BTC).rows == len(cols["open_time"]) - 1
    later = [q for path, q in state.requests[n_requests:] if path == "/v5/market/kline"]
    assert len(later) == 2 and all(int(q["start"]) > T0 // 1_000_000 for q in later)


def test_fetch_mark_and_funding(fake, md):
    server, cols = fake
    client = BybitPublic(endpoint=server.url, max_rps=1000)
    mark_key = SeriesKey("bybit", "linear", "BTCUSDT", "1h", "mark")
    fund_key = SeriesKey("bybit", "linear", "BTCUSDT", "-", "funding")

    fetch_klines(client, md, mark_key, T0, T0 + 20 * DAY)
    fetch_funding(client, md, fund_key, T0, T0 + 20 * DAY)

    served = server.state.funding["BTCUSDT"]
    np.testing.assert_array_equal(md.read(fund_key)["rate"], served["rate"])
    marks = server.state.marks[("BTCUSDT", "1h")]
    assert marks["open_time"][-1] + HOUR > server.state.now_ms * 1_000_000  # the last hour is still open
    np.testing.assert_array_equal(md.read(mark_key)["close"], marks["close"][:-1])


def test_fetch_command_shows_progress_and_resumes(fake, tmp_path):
    server, cols = fake
    db = tmp_path / "m.duckdb"
    args = ("data", "fetch", "--symbol", "BTCUSDT", "--start", "2025-01-01", "--end", "2025-02-01",
            "--funding", "--endpoint", server.url, "--db", str(db))

    first = run_tradebus(*args)
    second = run_tradebus(*args)

    assert first.returncode == 0, first.stderr
    assert f"{len(cols['open_time']) - 1:,} new rows" in first.stderr and "pages" in first.stderr
    assert "0 new rows (3 of 3 pages already complete)" in second.stderr


def test_fill_command_names_the_fetch_to_run():
    cmd = fill_command(BTC, T0, T0 + 31 * DAY)

    assert cmd == "tradebus data fetch --symbol BTCUSDT --timeframe 5m --start 2025-01-01 --end 2025-02-01"


def test_funding_fetch_fills_an_earlier_gap(fake, md):
    server, _ = fake
    client = BybitPublic(endpoint=server.url, max_rps=1000)
    key = SeriesKey("bybit", "linear", "BTCUSDT", "-", "funding")

    fetch_funding(client, md, key, T0 + 6 * DAY, T0 + 10 * DAY)
    later = md.coverage(key).rows
    result = fetch_funding(client, md, key, T0, T0 + 10 * DAY)

    served = server.state.funding["BTCUSDT"]["open_time"]
    expected = int(((served >= T0) & (served < T0 + 10 * DAY)).sum())
    assert later < expected and md.coverage(key).rows == expected and result.new_rows == expected - later
