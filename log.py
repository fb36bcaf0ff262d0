"""structlog, configured once: console or JSON, with secrets redacted before anything is rendered.

Two layers keep secrets out of logs: values under secret-named keys (``api_key``, ``secret``, ``sign``,
``X-BAPI-*``, ...) are replaced wherever they sit in the event dict, and any value registered with
``register_secret`` (the live adapter registers its keys at start) is scrubbed from every string.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, TextIO

import structlog

REDACTED = "***"
_SECRET_NAMES = {
    "api_key", "apikey", "api_secret", "secret", "secret_key", "sign", "signature", "password",
    "passphrase", "token", "access_token", "authorization", "private_key",
}
_MIN_SECRET_LEN = 6
_secret_values: set[str] = set()
_secret_re: re.Pattern[str] | None = None


def is_secret_key(key: str) -> bool:
    """Return whether a field name names a secret."""
    k = key.lower().replace("-", "_")
    return k in _SECRET_NAMES or k.startswith("x_bapi_") or k.endswith(("_secret", "api_key", "_password"))


def register_secret(value: str) -> None:
    """Scrub ``value`` from every log line from now on."""
    global _secret_re
    if value and len(value) >= _MIN_SECRET_LEN:
        _secret_values.add(value)
        _secret_re = re.compile("|".join(re.escape(v) for v in sorted(_secret_values, key=len, reverse=True)))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _secret_re.sub(REDACTED, value) if _secret_re is not None else value
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    return value


def redact_secrets(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: hide secret-named fields and registered secret values."""
    return _scrub(event_dict)


def configure_logging(fmt: str | None = None, level: str | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog for the process (``fmt``: console or json)."""
    fmt = (fmt or os.environ.get("TRADEBUS_LOG_FORMAT") or "console").lower()
    level_name = (level or os.environ.get("TRADEBUS_LOG_LEVEL") or "info").upper()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        # Without a stream, whatever sys.stderr is at each call: a caller that swapped it for a while
        # (a test runner, a CLI harness) and closed it leaves no logger writing to a closed file.
        logger_factory=structlog.PrintLoggerFactory(stream) if stream else lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
