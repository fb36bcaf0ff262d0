"""A fake Bybit v5 server on loopback that speaks the real wire format (public market endpoints so far).

Responses use the real envelope ``{"retCode", "retMsg", "result", "retExtInfo", "time"}`` and shapes:
kline rows ``[startMs, open, high, low, close, volume, turnover]`` as strings, newest first, at most
``limit`` (default 200, max 1000) of the newest rows in [start, end], with the still-open candle
included when it falls in range; funding rows ``{symbol, fundingRate, fundingRateTimestamp}``.
Every request is logged, rate-limit headers are sent, and faults can be injected.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from tradebus.components.timeframes import BYBIT_INTERVAL

MS = 1_000_000
_TF_BY_INTERVAL = {v: k for k, v in BYBIT_INTERVAL.items()}


def _num(x: float) -> str:
    """A decimal string as Bybit writes them: no exponent, no trailing zeros."""
    return np.format_float_positional(float(x), trim="-")


@dataclass
class FakeBybitState:
    """What the fake serves, and what it saw."""

    now_ms: int
    candles: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)  # (symbol, tf)
    marks: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    funding: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    fail_next: list[tuple[int, int, str]] = field(default_factory=list)  # (http status, retCode, msg)
    limit_status: int = 599
    lock: threading.Lock = field(default_factory=threading.Lock)


def _envelope(result: Any, ret_code: int = 0, msg: str = "OK", now_ms: int = 0) -> bytes:
    return json.dumps({"retCode": ret_code, "retMsg": msg, "result": result, "retExtInfo": {},
                       "time": now_ms}).encode()


def _kline_rows(data: dict[str, np.ndarray] | None, q: dict[str, str], now_ms: int, mark: bool) -> list:
    if data is None:
        return []
    limit = min(int(q.get("limit", 200)), 1000)
    t_ms = data["open_time"] // MS
    start = int(q.get("start", 0))
    end = int(q.get("end", now_ms))
    sel = np.flatnonzero((t_ms >= start) & (t_ms <= end) & (t_ms <= now_ms))
    sel = sel[::-1][:limit]  # newest first
    names = ("open", "high", "low", "close") if mark else ("open", "high", "low", "close", "volume", "turnover")
    # A row whose candle has not closed by now_ms is served too: that is Bybit's still-open candle.
    return [[str(int(t_ms[i]))] + [_num(data[n][i]) for n in names] for i in sel]


class _Handler(BaseHTTPRequestHandler):
    server: "FakeBybit"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes) -> None:
        st = self.server.state
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Bapi-Limit", "600")
        self.send_header("X-Bapi-Limit-Status", str(st.limit_status))
        self.send_header("X-Bapi-Limit-Reset-Timestamp", str(st.now_ms + 1000))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        st = self.server.state
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with st.lock:
            st.requests.append((url.path, q))
            fault = st.fail_next.pop(0) if st.fail_next else None
        if fault is not None:
            status, code, msg = fault
            self._send(status, _envelope({}, code, msg, st.now_ms) if status == 200 else b"Forbidden")
            return
        if url.path == "/v5/market/time":
            result = {"timeSecond": str(st.now_ms // 1000), "timeNano": str(st.now_ms * MS)}
        elif url.path in ("/v5/market/kline", "/v5/market/mark-price-kline"):
            mark = url.path == "/v5/market/mark-price-kline"
            tf = _TF_BY_INTERVAL.get(q.get("interval", ""))
            if tf is None or "symbol" not in q:
                self._send(200, _envelope({}, 10001, "params error", st.now_ms))
                return
            store = st.marks if mark else st.candles
            rows = _kline_rows(store.get((q["symbol"], tf)), q, st.now_ms, mark)
            result = {"category": q.get("category", "linear"), "symbol": q["symbol"], "list": rows}
        elif url.path == "/v5/market/funding/history":
            data = st.funding.get(q.get("symbol", ""))
            limit = min(int(q.get("limit", 200)), 200)
            rows = []
            if data is not None:
                t_ms = data["open_time"] // MS
                start, end = int(q.get("startTime", 0)), int(q.get("endTime", st.now_ms))
                sel = np.flatnonzero((t_ms >= start) & (t_ms <= end))[::-1][:limit]
                rows = [{"symbol": q["symbol"], "fundingRate": _num(data["rate"][i]),
                         "fundingRateTimestamp": str(int(t_ms[i]))} for i in sel]
            result = {"category": q.get("category", "linear"), "list": rows}
        else:
            self._send(404, b"not found")
            return
        self._send(200, _envelope(result, now_ms=st.now_ms))


class FakeBybit(ThreadingHTTPServer):
    """Start with ``FakeBybit.start(state)``; ``url`` is the endpoint to give the client."""

    daemon_threads = True

    def __init__(self, state: FakeBybitState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @classmethod
    def start(cls, state: FakeBybitState) -> "FakeBybit":
        server = cls(state)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
