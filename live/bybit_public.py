"""Bybit over REST through pybit (the live package is the only code importing pybit): the public
client, and the request plumbing the signed trading client (``live.bybit.BybitRest``) shares with it.

Blocking calls (pybit is synchronous); callers in asyncio run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import time
from typing import Any

import requests
import structlog
from pybit import _helpers
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

from tradebus.components.timeframes import BYBIT_INTERVAL, tf_ns
from tradebus.live import bybit_wire as w

log = structlog.get_logger("tradebus.bybit")


class VenueError(RuntimeError):
    """The venue refused or failed a request."""


class VenueRejected(VenueError):
    """The venue refused a request; ``code`` is its retCode."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"retCode {code}: {message}")
        self.code = code
        self.message = message


class OutcomeUnknown(VenueError):
    """A request may or may not have taken effect: look it up before doing anything else."""


UNKNOWN_OUTCOME_CODES = frozenset({10000, 10016, 110072})
RATE_LIMITED = 10006
CLOCK_REJECTED = 10002


class VenueClock:
    """Venue time: the local clock plus an offset measured from the venue's own clock."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return _helpers.generate_timestamp() + self.offset_ms


class BybitPublic:
    """Public endpoints: server time, klines, mark-price klines, funding history.

    Every call goes through ``_call``: at most ``max_rps``; a low ``X-Bapi-Limit-Status`` waits for the
    reset it names; 10006 waits for ``X-Bapi-Limit-Reset-Timestamp`` (in venue time) and retries (pybit's
    own retry would sleep on the local clock and raise on a reset already past, so it is off); errors
    become ``VenueError``.
    """

    KLINE_LIMIT = 1000
    FUNDING_LIMIT = 200

    def __init__(self, *, endpoint: str | None = None, testnet: bool = False, timeout: float = 10.0,
                 max_rps: float = 10.0, max_rate_waits: int = 3, http: HTTP | None = None) -> None:
        # retry_codes: a code that never occurs, so pybit retries nothing by itself (an empty set means
        # "the defaults" to pybit).
        self._http = http or HTTP(testnet=testnet, timeout=timeout, return_response_headers=True, max_retries=1,
                                  retry_codes={-1}, log_requests=False)
        if endpoint:
            self._http.endpoint = endpoint.rstrip("/")
        self.clock = VenueClock()
        self._min_interval = 1.0 / max_rps
        self._last_call = 0.0
        self._max_rate_waits = max_rate_waits
        self._limit_reset_ms = 0  # when the budget runs out, the venue time it refills
        self.requests = 0

    @property
    def endpoint(self) -> str:
        return self._http.endpoint

    def _wait_ms(self, reset_ms: int) -> float:
        return max(0.0, min(10.0, (reset_ms - self.clock.now_ms()) / 1000))

    def _resync(self) -> bool:
        """Answer to 10002 (timestamp outside the recv window): True if the call should be retried."""
        return False

    def _call(self, method: str, **params: Any) -> Any:
        """One request, with throttling, rate-limit waits and a clock resync; returns ``result``.
        A create (``place_order``) that may have happened raises ``OutcomeUnknown``."""
        create = method == "place_order"
        resynced = False
        for _ in range(self._max_rate_waits + 2):
            wait = max(self._last_call + self._min_interval - time.monotonic(),
                       self._wait_ms(self._limit_reset_ms) if self._limit_reset_ms else 0.0)
            if wait > 0:
                time.sleep(wait)
            self._limit_reset_ms = 0
            self._last_call = time.monotonic()
            self.requests += 1
            try:
                body, _elapsed, headers = getattr(self._http, method)(**params)
            except InvalidRequestError as exc:
                code = int(exc.status_code)
                if code == RATE_LIMITED:
                    reset = (exc.resp_headers or {}).get("X-Bapi-Limit-Reset-Timestamp")
                    self._limit_reset_ms = int(reset) if reset else self.clock.now_ms() + 1000
                    log.warning("rate limited by the venue; waiting for the reset", method=method,
                                wait_s=round(self._wait_ms(self._limit_reset_ms), 3))
                    continue
                if code == CLOCK_REJECTED and not resynced and self._resync():
                    resynced = True
                    continue
                if code in UNKNOWN_OUTCOME_CODES and create:
                    raise OutcomeUnknown(f"create answered retCode {code}: {exc.message}") from None
                raise VenueRejected(code, f"Bybit refused {method}: {exc.message}") from None
            except FailedRequestError as exc:
                hint = " (403: Bybit rate-limits this IP for about 10 minutes)" if exc.status_code == 403 else ""
                raise VenueError(f"Bybit {method} failed: HTTP {exc.status_code} {exc.message}{hint}") from None
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
                if create:
                    raise OutcomeUnknown(f"create: {type(exc).__name__}") from None
                raise VenueError(f"Bybit {method}: {type(exc).__name__}") from None
            status, reset = headers.get("X-Bapi-Limit-Status"), headers.get("X-Bapi-Limit-Reset-Timestamp")
            if status is not None and reset is not None and int(status) <= 1:
                self._limit_reset_ms = int(reset)
            return body["result"]
        raise VenueError(f"Bybit {method}: still rate limited after {self._max_rate_waits} waits")

    def server_time_ms(self) -> int:
        """Return the venue's clock in milliseconds."""
        result = self._call("get_server_time")
        return int(result["timeNano"]) // 1_000_000

    def klines(self, symbol: str, timeframe: str, start_ms: int, end_ms: int, *, category: str = "linear",
               mark: bool = False) -> list[list[str]]:
        """Return raw kline rows (newest first) with start_ms <= start <= end_ms, at most KLINE_LIMIT."""
        method = "get_mark_price_kline" if mark else "get_kline"
        result = self._call(method, category=category, symbol=symbol, interval=BYBIT_INTERVAL[timeframe],
                            start=start_ms, end=end_ms, limit=self.KLINE_LIMIT)
        return result["list"]

    def funding(self, symbol: str, start_ms: int, end_ms: int, *, category: str = "linear") -> list[dict]:
        """Return raw funding rows (newest first) within [start_ms, end_ms], at most FUNDING_LIMIT."""
        result = self._call("get_funding_rate_history", category=category, symbol=symbol,
                            startTime=start_ms, endTime=end_ms, limit=self.FUNDING_LIMIT)
        return result["list"]

    @staticmethod
    def _typed(result: Any, shape: type) -> Any:
        try:
            return w.typed(result, shape)
        except w.WireError as exc:
            raise VenueError(str(exc)) from None

    def sync_clock(self) -> int:
        """Measure the venue clock's offset from ours (half the round trip is taken as latency)."""
        t0 = _helpers.generate_timestamp()
        venue = self.server_time_ms()
        t1 = _helpers.generate_timestamp()
        self.clock.offset_ms = venue - (t0 + t1) // 2
        return self.clock.offset_ms

    def instrument(self, symbol: str, category: str = "linear") -> w.InstrumentRules:
        page = self._typed(self._call("get_instruments_info", category=category, symbol=symbol), w.InstrumentsPage)
        found = [i for i in page.list if i.symbol == symbol]
        if not found:
            raise VenueError(f"{symbol}: no such {category} instrument at the venue")
        rules = w.InstrumentRules.of(found[0])
        if not rules.trading:
            raise VenueError(f"{symbol}: the venue's status is {found[0].status!r}, not Trading: no orders can be placed")
        return rules

    def closed_klines(self, symbol: str, timeframe: str, start_ms: int, end_ms: int, *, last: int | None = None,
                      category: str = "linear") -> list[list[str]]:
        """Closed candles opening in [start_ms, end_ms], oldest first, as REST rows (the open one dropped);
        with ``last``, the newest ``last`` of them (paging back from ``end_ms`` stops once they are in)."""
        step = tf_ns(timeframe) // 1_000_000
        now = self.clock.now_ms()
        rows: dict[int, list[str]] = {}
        end = end_ms
        while end >= start_ms and (last is None or len(rows) < last):
            page = self.klines(symbol, timeframe, start_ms, end, category=category)
            rows.update((int(r[0]), r) for r in page if start_ms <= int(r[0]) <= end_ms and int(r[0]) + step <= now)
            if len(page) < self.KLINE_LIMIT:
                break
            end = min(int(r[0]) for r in page) - 1
        keep = sorted(rows)[-last:] if last else sorted(rows)
        return [rows[t] for t in keep]
