"""Fetch candles, mark-price candles and funding rates from a venue's public API into market data.

Work is cut into chunks of at most one page (1,000 bars); each chunk is written in its own transaction
as soon as it arrives, so a killed fetch keeps what it got and the next run skips every chunk already
complete (resume). Rows come newest-first from Bybit and the first may be the still-open candle: rows
are sorted, and any candle that has not closed by the venue's clock is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from tradebus.components.timeframes import bucket_start, tf_ns
from tradebus.engine.market import FUNDING_EVERY
from tradebus.engine.marketdata import Columns, MarketData, SeriesKey
from tradebus.live.bybit_wire import parse_klines

MS = 1_000_000
FUNDING_CHUNK = 200 * FUNDING_EVERY  # one page


class PublicClient(Protocol):
    """What fetching needs from a venue (``tradebus.live.bybit_public.BybitPublic`` is one)."""

    KLINE_LIMIT: int
    FUNDING_LIMIT: int

    def server_time_ms(self) -> int: ...
    def klines(self, symbol: str, timeframe: str, start_ms: int, end_ms: int, *, category: str = ...,
               mark: bool = ...) -> list[list[str]]: ...
    def funding(self, symbol: str, start_ms: int, end_ms: int, *, category: str = ...) -> list[dict]: ...


@dataclass
class FetchResult:
    key: SeriesKey
    chunks: int
    skipped: int
    new_rows: int


Progress = Callable[[int, int], None]
"""Called with (chunks done, chunks total)."""


def parse_funding(rows: list[dict]) -> Columns:
    """Turn raw funding rows into sorted columns."""
    t = np.array([int(r["fundingRateTimestamp"]) * MS for r in rows], dtype=np.int64)
    rate = np.array([float(r["fundingRate"]) for r in rows], dtype=np.float64)
    order = np.argsort(t, kind="stable")
    return {"open_time": t[order], "rate": rate[order]}


def kline_chunks(start_ns: int, end_ns: int, timeframe: str, limit: int) -> list[tuple[int, int]]:
    """Cut [start, end) into aligned chunks of at most ``limit`` bars."""
    length = tf_ns(timeframe)
    first = bucket_start(start_ns + length - 1, timeframe)  # first bar opening at or after start
    step = length * limit
    return [(s, min(s + step, end_ns)) for s in range(first, end_ns, step)]


def _bars_in(s: int, e: int, length: int) -> int:
    return max(0, -(-(e - s) // length))


def fetch_klines(client: PublicClient, md: MarketData, key: SeriesKey, start_ns: int, end_ns: int,
                 progress: Progress | None = None) -> FetchResult:
    """Fetch one candle (or mark-candle) series over [start, end), skipping complete chunks."""
    mark = key.kind == "mark"
    length = tf_ns(key.timeframe)
    now_ns = client.server_time_ms() * MS
    end_ns = min(end_ns, bucket_start(now_ns, key.timeframe))  # the open candle is never stored
    chunks = kline_chunks(start_ns, end_ns, key.timeframe, client.KLINE_LIMIT)
    skipped = new = 0
    for done, (s, e) in enumerate(chunks, start=1):
        if md.coverage(key, s, e).rows >= _bars_in(s, e, length):
            skipped += 1
        else:
            rows = client.klines(key.symbol, key.timeframe, s // MS, (e - 1) // MS, category=key.market, mark=mark)
            cols = parse_klines(rows, mark, key.timeframe, now_ns)
            inside = (cols["open_time"] >= s) & (cols["open_time"] < e)
            new += md.write(key, {k: v[inside] for k, v in cols.items()})
        if progress:
            progress(done, len(chunks))
    return FetchResult(key, len(chunks), skipped, new)


def fetch_funding(client: PublicClient, md: MarketData, key: SeriesKey, start_ns: int, end_ns: int,
                  progress: Progress | None = None) -> FetchResult:
    """Fetch funding rates over [start, end), skipping chunks already complete (every 8 hours covered)."""
    chunks = [(s, min(s + FUNDING_CHUNK, end_ns)) for s in range(start_ns, end_ns, FUNDING_CHUNK)]
    skipped = new = 0
    for done, (s, e) in enumerate(chunks, start=1):
        if md.coverage(key, s, e).rows >= (e - s) // FUNDING_EVERY:
            skipped += 1
        else:
            page_end = e - 1
            while True:
                rows = client.funding(key.symbol, s // MS, page_end // MS, category=key.market)
                cols = parse_funding(rows)
                inside = (cols["open_time"] >= s) & (cols["open_time"] < e)
                new += md.write(key, {k: v[inside] for k, v in cols.items()})
                if len(rows) < client.FUNDING_LIMIT or len(cols["open_time"]) == 0:
                    break
                page_end = int(cols["open_time"][0]) - 1  # older page within this chunk
                if page_end < s:
                    break
        if progress:
            progress(done, len(chunks))
    return FetchResult(key, len(chunks), skipped, new)
