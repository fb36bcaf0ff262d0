"""The Bybit adapter: pybit's REST client and websockets, made safe to build a trading daemon on.

pybit is synchronous and threaded, so this module is blocking by design and the daemon calls it with
``asyncio.to_thread``. What it adds to pybit (see ../shared/BYBIT.md for the traps):

- **clock**: requests and websocket auth are signed with the venue's time (local clock + an offset
  measured from ``/v5/market/time``), so a drifting local clock cannot lock the daemon out (10002);
- **rate limits and errors** (``BybitPublic._call``, shared with the public client): the venue's limit
  headers are honoured, 10006 waits for the reset it names; a refusal is ``VenueRejected``; an order
  create whose outcome is not known (a timeout, a dropped connection, 10000, 10016, 110072) is
  ``OutcomeUnknown``, which the caller resolves by looking the order up by its ``orderLinkId``;
- **streams**: every websocket callback is wrapped (an exception escaping one kills pybit's stream for
  good) and hands the message to asyncio with ``call_soon_threadsafe``; a supervisor rebuilds a socket
  pybit has given up on, and each (re)open is reported so the daemon can backfill what it missed.

Secrets: the key and secret live in ``Credentials``, whose repr hides them; pybit's request logging
(which prints them) stays off.
"""

from __future__ import annotations

import asyncio
import json
import re
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import structlog
from pybit._http_manager import generate_signature
from pybit.unified_trading import HTTP, WebSocket

from tradebus.components.timeframes import BYBIT_INTERVAL
from tradebus.log import register_secret
from tradebus.live import bybit_wire as w
from tradebus.live.bybit_public import BybitPublic, VenueClock, VenueError

log = structlog.get_logger("tradebus.bybit")

@dataclass(frozen=True)
class Credentials:
    key: str
    secret: str = field(repr=False)

    def __repr__(self) -> str:  # never print the key either: it identifies the account
        return "Credentials(key=***, secret=***)"

    def __post_init__(self) -> None:
        register_secret(self.key)  # scrubbed from every log line, should one ever carry them
        register_secret(self.secret)

    @classmethod
    def load(cls, prefix: str, file: Path | None = None) -> "Credentials":
        """From ``{prefix}_API_KEY`` / ``{prefix}_API_SECRET``, else from ``file`` (JSON ``{"key", "secret"}``
        or two lines); the error says where it looked and never echoes a value."""
        key, secret = os.environ.get(f"{prefix}_API_KEY", ""), os.environ.get(f"{prefix}_API_SECRET", "")
        if key and secret:
            return cls(key, secret)
        if file is not None:
            key, secret = _read_key_file(file)
            if file.stat().st_mode & 0o077:
                log.warning("key file is readable by other users; chmod 600 it", file=str(file))
            return cls(key, secret)
        raise ValueError(f"no API key: set {prefix}_API_KEY and {prefix}_API_SECRET, or pass --keys FILE")


KEY_FILE_MAX = 4096
_KEY_CHARS = re.compile(r"^[A-Za-z0-9_\-+/=.]{1,256}$")


def _read_key_file(file: Path) -> tuple[str, str]:
    """The (key, secret) in ``file``: JSON ``{"key", "secret"}`` or two lines. Errors name the file and
    what is wrong, never a value."""
    try:
        with open(file, "rb") as fh:
            raw = fh.read(KEY_FILE_MAX + 1)
    except OSError as exc:
        raise ValueError(f"key file {file}: {exc.strerror}") from None
    if len(raw) > KEY_FILE_MAX:
        raise ValueError(f"key file {file}: larger than {KEY_FILE_MAX:,} bytes; it should hold a key and a secret")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"key file {file}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
        key, secret = data["key"], data["secret"]
    except (ValueError, KeyError, TypeError):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if len(lines) != 2:
            raise ValueError(f"key file {file}: expected JSON {{\"key\", \"secret\"}} or two lines "
                             f"(key, then secret); found {len(lines)} non-empty line(s)") from None
        key, secret = lines
    for name, value in (("key", key), ("secret", secret)):
        if not isinstance(value, str) or not _KEY_CHARS.match(value):
            raise ValueError(f"key file {file}: the {name} must be 1-256 letters, digits or _-+/=. characters"
                             " (its value is not shown)")
    return key, secret


class _SignedHTTP(HTTP):
    """pybit's HTTP client signing with venue time instead of the local clock."""

    venue_clock: VenueClock

    def __repr__(self) -> str:  # pybit's dataclass repr would print api_key and api_secret
        return f"_SignedHTTP(endpoint={getattr(self, 'endpoint', '')!r})"

    def _prepare_headers(self, payload: Any, recv_window: int, content_type: str = "application/json") -> dict:
        timestamp = self.venue_clock.now_ms()
        signature = self._auth(payload=payload, recv_window=recv_window, timestamp=timestamp)
        return {"Content-Type": content_type, "X-BAPI-API-KEY": self.api_key, "X-BAPI-SIGN": signature,
                "X-BAPI-SIGN-TYPE": "2", "X-BAPI-TIMESTAMP": str(timestamp), "X-BAPI-RECV-WINDOW": str(recv_window)}


class BybitRest(BybitPublic):
    """Signed REST for one account (blocking: call it from a worker thread)."""

    def __init__(self, creds: Credentials, *, endpoint: str | None = None, demo: bool = False,
                 testnet: bool = False, timeout: float = 5.0, recv_window: int = 5000, max_rps: float = 50.0) -> None:
        http = _SignedHTTP(testnet=testnet, demo=demo, api_key=creds.key, api_secret=creds.secret,
                           recv_window=recv_window, timeout=timeout, max_retries=1, retry_codes={-1},
                           return_response_headers=True, log_requests=False)
        super().__init__(endpoint=endpoint, max_rps=max_rps, http=http)
        http.venue_clock = self.clock

    def _resync(self) -> bool:
        self.sync_clock()
        return True

    def _pages(self, method: str, shape: type, **params: Any) -> list:
        """Every item of a cursor-paginated list."""
        out, cursor = [], ""
        while True:
            page = self._typed(self._call(method, **params, **({"cursor": cursor} if cursor else {})), shape)
            out += page.list
            cursor = page.nextPageCursor
            if not cursor or not page.list:
                return out

    # -- calls --------------------------------------------------------------------------------------

    def create(self, params: dict[str, Any]) -> w.OrderAck:
        return self._typed(self._call("place_order", **params), w.OrderAck)

    def amend(self, symbol: str, link_id: str, *, qty: str | None = None, price: str | None = None,
              trigger_price: str | None = None, category: str = "linear") -> w.OrderAck:
        """Change a resting order's qty, limit price or trigger (decimal strings from ``InstrumentRules``)."""
        changes = {k: v for k, v in (("qty", qty), ("price", price), ("triggerPrice", trigger_price)) if v is not None}
        if not changes:
            raise ValueError("amend: give at least one of qty, price, trigger_price")
        return self._typed(self._call("amend_order", category=category, symbol=symbol, orderLinkId=link_id, **changes),
                           w.OrderAck)

    def cancel(self, symbol: str, link_id: str, category: str = "linear") -> None:
        self._call("cancel_order", category=category, symbol=symbol, orderLinkId=link_id)

    def cancel_all(self, symbol: str, category: str = "linear") -> None:
        self._call("cancel_all_orders", category=category, symbol=symbol)

    def find_order(self, symbol: str, link_id: str, category: str = "linear") -> w.Order | None:
        """The order with this ``orderLinkId``, open or recently closed, or None if the venue has none."""
        for method in ("get_open_orders", "get_order_history"):
            page = self._typed(self._call(method, category=category, symbol=symbol, orderLinkId=link_id), w.OrdersPage)
            for order in page.list:
                if order.orderLinkId == link_id:
                    return order
        return None

    def open_orders(self, symbol: str, category: str = "linear") -> list[w.Order]:
        return self._pages("get_open_orders", w.OrdersPage, category=category, symbol=symbol, limit=50)

    def executions(self, symbol: str, since_ms: int, category: str = "linear") -> list[w.Execution]:
        """Executions at or after ``since_ms`` (venue time), oldest first, every page."""
        out = self._pages("get_executions", w.ExecutionsPage, category=category, symbol=symbol, startTime=since_ms,
                          limit=100)
        return sorted(out, key=lambda e: (int(e.execTime), e.seq))

    def position(self, symbol: str, category: str = "linear") -> w.Position | None:
        page = self._typed(self._call("get_positions", category=category, symbol=symbol), w.PositionsPage)
        return next((p for p in page.list if p.symbol == symbol), None)

    def wallet(self) -> w.Wallet:
        result = self._call("get_wallet_balance", accountType="UNIFIED")
        return self._typed(result["list"][0], w.Wallet)

# --- websockets -------------------------------------------------------------------------------------


SUBSCRIBE_WAIT_S = 10.0


class AuthRefused(VenueError):
    """The venue refused the API key (a wrong key or secret, or one without the permissions needed)."""


class _Socket(WebSocket):
    """pybit's WebSocket, pointed at ``url`` when given, signing auth with venue time, reporting opens,
    and hardened where pybit lets one message kill the stream for good:

    - pybit files a subscription's ``req_id`` only after sending it, so an ack that comes back first (a
      fast venue) raised KeyError inside its handler, which ended the stream (seen against the fake,
      about one start in 20). Any exception in pybit's own handling is now logged, not fatal;
    - a refused auth closes the socket (the supervisor rebuilds it) instead of raising on pybit's thread;
    - ``subscribe`` waited forever for a socket that had died meanwhile; it now gives up after a while, and
      on a private socket it waits for the auth reply first.
    """

    def __init__(self, url: str | None, clock: VenueClock, on_open: Callable[[], None], **kwargs: Any) -> None:
        self._url = url
        self._venue_clock = clock
        self._opened = on_open
        self.auth_refused = ""  # the venue's reply to a refused auth
        super().__init__(**kwargs)

    def _connect(self, url: str) -> None:
        super()._connect(self._url or url)

    def _on_open(self) -> None:
        super()._on_open()
        self._opened()

    def _on_message(self, message: Any) -> None:
        try:
            super()._on_message(message)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            log.warning("websocket message not handled", error=f"{type(exc).__name__}: {exc}")

    def _process_auth_message(self, message: dict) -> None:
        if message.get("success") is True:
            self.auth = True
            return
        self.auth_refused = str(message.get("ret_msg") or "refused")
        log.error("websocket auth refused; the socket is closed and rebuilt", reply=self.auth_refused)
        threading.Thread(target=self.exit, daemon=True).start()  # not on the socket's own thread

    def subscribe(self, topic: str, callback: Callable, symbol: Any = False) -> None:
        deadline = time.monotonic() + SUBSCRIBE_WAIT_S
        # Connected, and for a private socket authorised: a subscription sent before the auth reply would
        # be refused, and a refused auth must fail the connect rather than leave a deaf socket.
        while not self.is_connected() or (self.api_key and not self.auth):
            if self.exited or time.monotonic() > deadline:
                raise ConnectionError(f"{self.ws_name}: socket closed or not authorised before subscribing to {topic}")
            time.sleep(0.02)
        super().subscribe(topic, callback, symbol)

    def _auth(self) -> None:
        expires = self._venue_clock.now_ms() + self.private_auth_expire * 1000
        signature = generate_signature(self.rsa_authentication, self.api_secret, f"GET/realtime{expires}")
        self.ws.send(json.dumps({"op": "auth", "args": [self.api_key, expires, signature]}))


Inbox = Callable[[tuple[str, Any, int]], None]
"""Where stream messages go, on the event loop: ``("frame", Frame, t)``, ``("open", name, t)``, ``("bad", text, t)``;
``t`` is ``time.perf_counter_ns()`` when the message reached tradebus on the socket's thread."""


class Stream:
    """One supervised websocket: public klines, or the private order/execution/position/wallet topics."""

    def __init__(self, name: str, build: Callable[[Callable[[], None]], WebSocket],
                 subscribe: Callable[[WebSocket, Callable[[dict], None]], None], loop: asyncio.AbstractEventLoop,
                 inbox: Inbox) -> None:
        self.name = name
        self._build = build
        self._subscribe = subscribe
        self._loop = loop
        self._inbox = inbox
        self._ws: WebSocket | None = None

    def _post(self, kind: str, payload: Any, received_ns: int = 0) -> None:
        try:
            self._loop.call_soon_threadsafe(self._inbox, (kind, payload, received_ns or time.perf_counter_ns()))
        except RuntimeError:  # the loop is closed: the daemon is stopping
            pass

    def _on_message(self, msg: dict) -> None:
        # Runs on pybit's thread: nothing may escape, or the stream is dead for good.
        received_ns = time.perf_counter_ns()
        try:
            frame = w.frame(msg)
        except Exception as exc:  # noqa: BLE001 - a bad frame is logged and skipped
            self._post("bad", f"{self.name}: {exc}")
            return
        self._post("frame", frame, received_ns)

    def _on_open(self) -> None:
        try:
            self._post("open", self.name)
        except Exception:  # noqa: BLE001 - as above
            pass

    def connect(self, attempts: int = 3) -> None:
        """Build and subscribe (blocking: pybit connects inside its constructor); a socket that dies while
        subscribing is closed and built again."""
        for attempt in range(attempts):
            ws = self._build(self._on_open)
            try:
                self._subscribe(ws, self._on_message)
            except ConnectionError:
                ws.exit()
                if attempt == attempts - 1:
                    refused = getattr(ws, "auth_refused", "")
                    if refused:  # not the network: the key itself
                        raise AuthRefused(f"the venue refused the API key on the {self.name} stream ({refused}): "
                                          "check the key and secret (environment or --keys)") from None
                    raise
                continue
            self._ws = ws
            return

    def healthy(self) -> bool:
        ws = self._ws
        if ws is None:
            return False
        return (not ws.exited and ws.is_connected()) or bool(getattr(ws, "attempting_connection", False))

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.exit()
            except Exception:  # noqa: BLE001 - closing a dead socket may fail; it is gone either way
                pass

    async def supervise(self, every: float = 0.5, grace: float = 3.0) -> None:
        """Rebuild the socket whenever pybit has given up on it (runs until cancelled)."""
        bad_since: float | None = None
        while True:
            await asyncio.sleep(every)
            if self.healthy():
                bad_since = None
                continue
            bad_since = bad_since or time.monotonic()
            if time.monotonic() - bad_since < grace and self._ws is not None:
                continue
            log.warning("websocket down; rebuilding", stream=self.name)
            await asyncio.to_thread(self.close)
            try:
                await asyncio.to_thread(self.connect)
                bad_since = None
            except Exception as exc:  # noqa: BLE001 - the venue is unreachable: try again later
                log.warning("websocket rebuild failed", stream=self.name, error=str(exc))


def public_stream(symbol: str, timeframe: str, loop: asyncio.AbstractEventLoop, inbox: Inbox, *,
                  url: str | None = None, testnet: bool = False, clock: VenueClock | None = None) -> Stream:
    """Confirmed and open candles of one symbol (public data comes from mainnet even for demo)."""
    vc = clock or VenueClock()

    def build(on_open: Callable[[], None]) -> WebSocket:
        return _Socket(url, vc, on_open, testnet=testnet, channel_type="linear", retries=3, ping_interval=20,
                       ping_timeout=10)

    def subscribe(ws: WebSocket, cb: Callable[[dict], None]) -> None:
        ws.kline_stream(interval=BYBIT_INTERVAL[timeframe], symbol=symbol, callback=cb)

    return Stream("public", build, subscribe, loop, inbox)


def private_stream(creds: Credentials, loop: asyncio.AbstractEventLoop, inbox: Inbox, *, url: str | None = None,
                   demo: bool = False, testnet: bool = False, clock: VenueClock | None = None) -> Stream:
    vc = clock or VenueClock()

    def build(on_open: Callable[[], None]) -> WebSocket:
        return _Socket(url, vc, on_open, testnet=testnet, demo=demo, channel_type="private", api_key=creds.key,
                       api_secret=creds.secret, retries=3, ping_interval=20, ping_timeout=10,
                       private_auth_expire=10)

    def subscribe(ws: WebSocket, cb: Callable[[dict], None]) -> None:
        ws.order_stream(cb)
        ws.execution_stream(cb)
        ws.position_stream(cb)
        ws.wallet_stream(cb)

    return Stream("private", build, subscribe, loop, inbox)
