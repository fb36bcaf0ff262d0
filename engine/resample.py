"""Resample stored candles to a higher timeframe (pure numpy): a replay's own timeframe from a finer stored one."""

from __future__ import annotations

import numpy as np

from tradebus.components.timeframes import bucket_offset, check_resample, tf_ns

Candles = dict[str, np.ndarray]
"""Columns ``open_time`` (int64 ns), ``open``, ``high``, ``low``, ``close``, ``volume``, ``turnover``."""


def resample(candles: Candles, source: str, target: str) -> Candles:
    """Aggregate ``source`` candles into ``target`` candles.

    Buckets align to the epoch (weeks to Monday). Only buckets that have *closed* by the end of the
    data are returned: the trailing partial bucket is dropped, so a higher-timeframe bar never contains
    the future. A bucket with missing source bars (an exchange gap) is kept; ``count`` says how many
    source bars it holds (``expected`` would be ``check_resample(source, target)``).
    """
    check_resample(source, target)
    t = candles["open_time"]
    if len(t) == 0:
        return {k: v[:0] for k, v in candles.items()} | {"count": np.zeros(0, dtype=np.int64)}
    length, offset, src_len = tf_ns(target), bucket_offset(target), tf_ns(source)
    bucket = (t - offset) // length * length + offset
    starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    ends = np.concatenate((starts[1:], [len(t)]))
    out: Candles = {
        "open_time": bucket[starts],
        "open": candles["open"][starts],
        "high": np.maximum.reduceat(candles["high"], starts),
        "low": np.minimum.reduceat(candles["low"], starts),
        "close": candles["close"][ends - 1],
        "volume": np.add.reduceat(candles["volume"], starts),
        "count": (ends - starts).astype(np.int64),
    }
    if "turnover" in candles:
        out["turnover"] = np.add.reduceat(candles["turnover"], starts)
    closed = out["open_time"] + length <= t[-1] + src_len
    return {k: v[closed] for k, v in out.items()}
