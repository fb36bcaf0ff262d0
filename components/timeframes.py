"""Timeframes: names, lengths, Bybit interval codes and bucket alignment.

Buckets align to the Unix epoch (UTC): a 4h bar opens at 00:00, 04:00, ...; a day at 00:00 UTC; a week
on Monday 00:00 UTC (Bybit's weekly candle), which is the epoch shifted by four days.
"""

from __future__ import annotations

import numpy as np

NS = 1_000_000_000
MINUTE = 60 * NS
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
_WEEK_OFFSET = 4 * DAY  # 1970-01-01 was a Thursday; weeks start on Monday

TIMEFRAMES: dict[str, int] = {
    "1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "30m": 30 * MINUTE,
    "1h": HOUR, "2h": 2 * HOUR, "4h": 4 * HOUR, "6h": 6 * HOUR, "12h": 12 * HOUR, "1d": DAY, "1w": WEEK,
}

BYBIT_INTERVAL: dict[str, str] = {
    "1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "2h": "120", "4h": "240",
    "6h": "360", "12h": "720", "1d": "D", "1w": "W",
}


class TimeframeError(ValueError):
    """An unknown timeframe, or a resampling that cannot be done."""


def day(ns: int) -> str:
    """A time (ns since the epoch) as UTC ``YYYY-MM-DDTHH:MM:SSZ``: how reports, manifests and errors show it."""
    return str(np.datetime64(ns, "ns"))[:19] + "Z"


def tf_ns(timeframe: str) -> int:
    """Return a timeframe's length in nanoseconds."""
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        raise TimeframeError(f"unknown timeframe {timeframe!r}; allowed: {', '.join(TIMEFRAMES)}") from None


def bucket_start(ts_ns: int, timeframe: str) -> int:
    """Return the open time of the ``timeframe`` bucket containing ``ts_ns``."""
    length = tf_ns(timeframe)
    offset = _WEEK_OFFSET if timeframe == "1w" else 0
    return (ts_ns - offset) // length * length + offset


def bucket_offset(timeframe: str) -> int:
    """Return the alignment offset of a timeframe's buckets from the epoch (ns)."""
    tf_ns(timeframe)
    return _WEEK_OFFSET if timeframe == "1w" else 0


def check_resample(source: str, target: str) -> int:
    """Return how many ``source`` bars make one ``target`` bar; raise if it does not divide."""
    s, t = tf_ns(source), tf_ns(target)
    if t <= s or t % s:
        raise TimeframeError(f"cannot resample {source} into {target}: {target} must be a multiple of {source}")
    return t // s


def infer_timeframe(open_times: np.ndarray) -> str | None:
    """The timeframe the rows' spacing shows (the most common step between consecutive open times), if
    it is one tradebus knows."""
    t = np.unique(open_times)
    if len(t) < 2:
        return None
    steps, counts = np.unique(np.diff(t), return_counts=True)
    step = int(steps[np.argmax(counts)])
    return next((name for name, length in TIMEFRAMES.items() if length == step), None)
