"""Time-ordered event ids (ULID layout) and order ids derived from the event that caused an order.

An id is 26 Crockford base32 characters: 48 bits of milliseconds then 80 bits that start random (or
seeded, for reproducible replays) and count up within a millisecond. The alphabet is in ASCII order,
so sorting ids as strings sorts them by time, and the counter keeps ids from one generator strictly
increasing even when its clock stalls or steps back.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
import re
import secrets

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters per 10 bits: an id is 13 table lookups, not 26 divisions.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_RAND_BITS = 80
_RAND_MASK = (1 << _RAND_BITS) - 1
# Leave headroom so a burst of ids within one millisecond never overflows the random part.
_RAND_START_MASK = (1 << (_RAND_BITS - 2)) - 1
_TIME_MAX = (1 << 48) - 1
_LOW_MASK = (1 << 20) - 1  # seeded ids: low 20 bits from (millisecond, index in it)
_LOW_START_MASK = (1 << 19) - 1  # start below half, so counting up within a millisecond never wraps
_MIX = 0x9E3779B1  # odd multiplier spreading consecutive milliseconds over the low bits

ORDER_ID_MAX_LEN = 36
_ORDER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")


@lru_cache(maxsize=1024)  # every component of a replay step asks for the same millisecond
def _encode_time(ms: int) -> str:
    """The first 10 characters: 48 bits of milliseconds (as 50, two leading zero bits)."""
    p = _PAIRS
    return p[(ms >> 40) & 1023] + p[(ms >> 30) & 1023] + p[(ms >> 20) & 1023] + p[(ms >> 10) & 1023] + p[ms & 1023]


def _encode_rand(r: int) -> str:
    """The last 16 characters: 80 bits."""
    p = _PAIRS
    return (
        p[(r >> 70) & 1023] + p[(r >> 60) & 1023] + p[(r >> 50) & 1023] + p[(r >> 40) & 1023]
        + p[(r >> 30) & 1023] + p[(r >> 20) & 1023] + p[(r >> 10) & 1023] + p[r & 1023]
    )


def encode_ulid(value: int) -> str:
    """Encode a 128-bit integer as 26 Crockford base32 characters."""
    return _encode_time(value >> _RAND_BITS) + _encode_rand(value & _RAND_MASK)


def decode_ulid(text: str) -> int:
    """Decode 26 Crockford base32 characters back to the 128-bit integer."""
    if len(text) != 26:
        raise ValueError(f"an id has 26 characters, got {len(text)}: {text!r}")
    value = 0
    for ch in text.upper():
        idx = _CROCKFORD.find(ch)
        if idx < 0:
            raise ValueError(f"invalid character {ch!r} in id {text!r}")
        value = (value << 5) | idx
    return value


def id_time_ms(event_id: str) -> int:
    """Return the millisecond timestamp embedded in an id."""
    return decode_ulid(event_id) >> _RAND_BITS


class IdGenerator:
    """Produce strictly increasing, time-ordered ids.

    Unseeded (live), the random part is drawn from the OS at each new millisecond, as the ULID spec
    says. Seeded (replays), the id of the n-th event in a millisecond is a pure function of
    (seed, millisecond, n): the top 60 random bits come from the seed, the low 20 from the millisecond
    and n. So a rerun is byte-identical, any id can be re-derived without replaying what came before,
    and two generators with different seeds never meet.
    """

    __slots__ = ("_last_ms", "_rand", "_random", "_prefix", "_seed_text", "_n")

    def __init__(self, seed: str | None = None) -> None:
        self._random = seed is None
        self._last_ms = -1
        self._rand = 0
        self._prefix = ""
        self._n = 0
        base = 0 if seed is None else int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=10).digest(), "big")
        self._seed_text = _encode_rand(base & ~_LOW_MASK & _RAND_START_MASK)[:12]  # the 60 bits above the low 20

    def next(self, ts_ns: int) -> str:
        """Return a new id for an event initialised at ``ts_ns`` (nanoseconds)."""
        ms = ts_ns // 1_000_000
        if ms > self._last_ms:
            if ms > _TIME_MAX:
                raise ValueError(f"timestamp {ts_ns} ns is beyond the id range")
            self._last_ms = ms
            self._prefix = _encode_time(ms)
            if self._random:
                self._rand = secrets.randbits(_RAND_BITS) & _RAND_START_MASK
            else:
                self._n = (ms * _MIX) & _LOW_START_MASK
        elif self._random:
            self._rand += 1
            if self._rand > _RAND_MASK:  # pragma: no cover - needs 2**78 ids in one millisecond
                raise OverflowError("id generator exhausted")
        else:
            self._n += 1
            if self._n > _LOW_MASK:
                raise OverflowError("more than 2**19 seeded ids in one millisecond")
        if self._random:
            return self._prefix + _encode_rand(self._rand)
        n = self._n
        return self._prefix + self._seed_text + _PAIRS[n >> 10] + _PAIRS[n & 1023]


def order_id_for(cause_id: str, leg: str = "") -> str:
    """Derive the venue order id (Bybit ``orderLinkId``) from the id of the event that caused it.

    The same cause and leg always give the same order id, so a retry or a restart that re-derives an
    order can never create a second one at the venue (it gets "duplicate orderLinkId" instead).
    """
    oid = f"{cause_id}-{leg}" if leg else cause_id
    if not _ORDER_ID_RE.match(oid):
        raise ValueError(
            f"order id {oid!r} must be 1-{ORDER_ID_MAX_LEN} characters of [A-Za-z0-9_-]"
            f" (cause {cause_id!r}, leg {leg!r})"
        )
    return oid
