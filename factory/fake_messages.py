"""A fake Anthropic Messages API on loopback, for the tests and for trying ``tradebus research`` without a key.

It speaks the real wire format the ``anthropic`` client reads: ``POST /v1/messages`` with the key (``x-api-key``,
or ``Authorization: Bearer`` as the 2.x client sends it) and ``anthropic-version``; a ``message`` object with ``text`` and ``tool_use`` content blocks, ``stop_reason``
and ``usage``; errors as ``{"type": "error", "error": {"type", "message"}}`` with the real statuses (401,
400, 429 with ``retry-after``, 529 overloaded), which the client retries as it would the real API.

What it answers comes from a ``responder`` (request -> content blocks); ``ScriptedResearcher`` plays a
research model: a list of tool calls handed out in order, and a repaired call when our side answered the
last one with an error. Usage counts a token per 4 bytes of the request's system, messages and tools, and
per 4 bytes of the reply's content: every call's usage is recorded here, so a test compares the client's
accounting with what the endpoint reported.

Run it: ``python -m tradebus.factory.fake_messages [--port P]`` prints the base URL to give
``ANTHROPIC_BASE_URL``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

API_KEY = "sk-ant-fake-0123456789"
Responder = Callable[[dict], list[dict]]


def tokens(value: Any) -> int:
    return max(1, math.ceil(len(json.dumps(value, sort_keys=True)) / 4))


@dataclass
class FakeMessagesState:
    responder: Responder
    key: str = API_KEY
    requests: list[dict] = field(default_factory=list)  # every request body received (after auth)
    usage: list[dict] = field(default_factory=list)  # every successful reply's usage
    fail_next: list[tuple[int, str, float | None]] = field(default_factory=list)  # (status, error type, retry-after)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(1))


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_fake_{next(self.server.state._ids)}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        st: FakeMessagesState = self.server.state
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.split("?")[0] != "/v1/messages":
            self._error(404, "not_found_error", f"no route {self.path}")
            return
        bearer = self.headers.get("authorization", "").removeprefix("Bearer ")
        if st.key not in (self.headers.get("x-api-key"), bearer):  # the client sends either, by version
            self._error(401, "authentication_error", "invalid x-api-key")
            return
        if not self.headers.get("anthropic-version"):
            self._error(400, "invalid_request_error", "anthropic-version header is required")
            return
        with st.lock:
            fault = st.fail_next.pop(0) if st.fail_next else None
        if fault is not None:
            status, kind, after = fault
            self._error(status, kind, f"fake {kind}", {"retry-after": f"{after:g}"} if after is not None else None)
            return
        try:
            req = json.loads(body)
            model, max_tokens, messages = req["model"], int(req["max_tokens"]), req["messages"]
        except (ValueError, KeyError, TypeError) as exc:
            self._error(400, "invalid_request_error", f"bad request: {exc}")
            return
        with st.lock:
            st.requests.append(req)
        content = st.responder(req)
        usage = {"input_tokens": tokens([req.get("system"), messages, req.get("tools")]),
                 "output_tokens": min(max_tokens, tokens(content)), "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        with st.lock:
            st.usage.append(usage)
            n = next(st._ids)
        self._send(200, {"id": f"msg_fake_{n:06d}", "type": "message", "role": "assistant", "model": model,
                         "content": content, "stop_sequence": None, "usage": usage,
                         "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"})


class FakeMessages(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeMessagesState, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @classmethod
    def start(cls, state: FakeMessagesState, port: int = 0) -> "FakeMessages":
        server = cls(state, port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# --- a research model, scripted ---------------------------------------------------------------------------


def _tool_results(req: dict) -> list[dict]:
    last = req["messages"][-1]
    if last.get("role") != "user" or not isinstance(last.get("content"), list):
        return []
    return [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]


@dataclass
class ScriptedResearcher:
    """Hands out ``proposals`` (tool name, input) in order, one per new conversation; when our side answered
    the last call with an error, the next item of ``repairs`` (if any) is the model's fix."""

    proposals: list[tuple[str, dict]]
    repairs: list[tuple[str, dict]] = field(default_factory=list)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, req: dict) -> list[dict]:
        results = _tool_results(req)
        with self._lock:
            if results and any(r.get("is_error") for r in results) and self.repairs:
                name, args = self.repairs.pop(0)
            elif results:
                return [{"type": "text", "text": "Noted; waiting for the next iteration."}]
            else:
                name, args = self.proposals[self._next % len(self.proposals)]
                self._next += 1
        return [{"type": "text", "text": f"Proposal: {args.get('hypothesis', name)}"},
                {"type": "tool_use", "id": f"toolu_{abs(hash(json.dumps(args, sort_keys=True))) % 10**12:012d}",
                 "name": name, "input": args}]


def _sweep(name: str, strategy: str, hypothesis: str, **params: list) -> tuple[str, dict]:
    return ("propose_sweep", {"name": name, "hypothesis": hypothesis, "strategy": strategy,
                              "params": {**params, "allow_short": [True]}})


DEMO_SCRIPT = ScriptedResearcher(
    proposals=[
        # The first asks for a parameter ema_rsi_atr does not have; the repair below is its fix.
        ("propose_sweep", {"name": "ema_pullback", "hypothesis": "Trend with RSI pullbacks holds on majors.",
                           "strategy": "ema_rsi_atr", "params": {"fast": [10, 20], "speed": [3]}}),
        _sweep("breakout", "donchian_breakout", "Channel breakouts catch the large moves.",
               entry_period=[20, 40], exit_period=[10]),
        _sweep("ema_again", "ema_rsi_atr", "The same idea, once more.", fast=[10, 20], slow=[50, 100], rsi_period=[14]),
        _sweep("band_fade", "bollinger_reversion", "Range-bound hours revert to the mean.", period=[20, 40], k=[2.0, 2.5]),
        _sweep("macd_turns", "macd_cross", "Histogram turns lead price on 1h.", fast=[8, 12], slow=[26], signal=[9]),
        _sweep("slow_cross", "sma_cross", "Slow crosses avoid chop.", fast=[20, 30], slow=[100, 150]),
        _sweep("stoch_fade", "stochrsi_mean_reversion", "Oversold StochRSI bounces.", rsi_period=[14],
               stoch_period=[14], oversold=[15, 20], overbought=[80]),
        _sweep("wide_breakout", "donchian_breakout", "Longer channels, fewer false breaks.", entry_period=[55, 80],
               exit_period=[20]),
        # A composable spec generated from blocks: each pair of the three entries, both must agree.
        ("propose_sweep", {"name": "trend_confluence", "hypothesis": "Trend entries that agree, in trending hours.",
                           "strategy": "composable", "params": {"allow_short": [True]},
                           "combine": {"entries": [{"block": "ma_trend", "kind": "ema", "fast": 12, "slow": 48},
                                                   {"block": "macd_trend"}, {"block": "donchian_breakout", "period": 30}],
                                       "sizes": [2], "filters": [[{"block": "adx_min", "min": 20}]]}}),
        # A regime switch: flat while ADX is low (ranging), a crossover while it is high.
        ("propose_sweep", {"name": "regime_follow", "hypothesis": "Crossovers pay only when the market trends.",
                           "strategy": "regime_switch", "params": {
                               "strategy": ["sma_cross"], "below": [None],
                               "regime": [{"indicator": "adx", "period": 14, "threshold": 20},
                                          {"indicator": "adx", "period": 14, "threshold": 25}],
                               "above": [{"fast": 10, "slow": 40, "allow_short": True},
                                         {"fast": 20, "slow": 80, "allow_short": True}]}}),
    ],
    repairs=[_sweep("ema_pullback", "ema_rsi_atr", "Trend with RSI pullbacks holds on majors.", fast=[10, 20],
                    slow=[50, 100], rsi_period=[14])],
)


def main() -> None:
    p = argparse.ArgumentParser(description="A fake Anthropic Messages API on 127.0.0.1 (a scripted research model).")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = p.parse_args()
    server = FakeMessages(FakeMessagesState(DEMO_SCRIPT), args.port)
    print(f"ANTHROPIC_BASE_URL={server.url} ANTHROPIC_API_KEY={API_KEY}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
