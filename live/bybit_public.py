"""Bybit public market data over REST, through pybit (the live package is the only code importing pybit).

Blocking calls (pybit is synchronous); callers in asyncio run them with ``asyncio.to_thread``. Rate
limits: pybit sleeps on 10006 by itself; this client also honours ``X-Bapi-Limit-Status`` /
``X-Bapi-Limit-Reset-Timestamp`` when the venue sends them and never exceeds ``max_rps``.
"""

from __future__ import annotations

import time
from typing import Any

from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP

from tradebus.components.timeframes import BYBIT_INTERVAL


class VenueError(RuntimeError):
    """The venue refused or failed a request."""


class BybitPublic:
    """Public endpoints: server time, klines, mark-price klines, funding history."""

    KLINE_LIMIT = 1000
    FUNDING_LIMIT = 200

    def __init__(self, *, endpoint: str | None = None, testnet: bool = False, timeout: float = 10.0,
                 max_rps: float = 10.0) -> None:
        self._http = HTTP(testnet=testnet, timeout=timeout, return_response_headers=True, max_retries=3)
        if endpoint:
            self._http.endpoint = endpoint.rstrip("/")
        self._min_interval = 1.0 / max_rps
        self._last_call = 0.0
        self.requests = 0

    @property
    def endpoint(self) -> str:
        return self._http.endpoint

    def _call(self, method: str, **params: Any) -> dict:
        wait = self._last_call + self._min_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_call = time.monotonic()
        self.requests += 1
        try:
            body, _elapsed, headers = getattr(self._http, method)(**params)
        except InvalidRequestError as exc:
            raise VenueError(f"Bybit refused {method} {params}: {exc.message} (retCode {exc.status_code})") from None
        except FailedRequestError as exc:
            hint = " (403: Bybit rate-limits this IP for about 10 minutes)" if exc.status_code == 403 else ""
            raise VenueError(f"Bybit {method} failed: HTTP {exc.status_code} {exc.message}{hint}") from None
        self._respect_limit(headers)
        return body["result"]

    @staticmethod
    def _respect_limit(headers: Any) -> None:
        status = headers.get("X-Bapi-Limit-Status")
        reset = headers.get("X-Bapi-Limit-Reset-Timestamp")
        if status is not None and reset is not None and int(status) <= 1:
            time.sleep(min(10.0, max(0.0, int(reset) / 1000 - time.time())))

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
