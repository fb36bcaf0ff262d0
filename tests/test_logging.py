"""Logging: secrets never reach the rendered output, in either format."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from tradebus import log

SECRET = "sk-very-secret-value-123"


@pytest.fixture
def render():
    def _render(fmt: str, **fields) -> str:
        stream = io.StringIO()
        log.configure_logging(fmt, "debug", stream=stream)
        structlog.get_logger("t").info("placing order", **fields)
        return stream.getvalue()

    yield _render
    structlog.reset_defaults()


@pytest.mark.parametrize("fmt", ["console", "json"])
@pytest.mark.parametrize("key", ["api_key", "api_secret", "secret", "sign", "X-BAPI-SIGN", "X-BAPI-API-KEY", "password"])
def test_secret_named_fields_are_redacted(render, fmt, key):
    text = render(fmt, **{key: SECRET, "symbol": "BTCUSDT"})

    assert SECRET not in text
    assert "BTCUSDT" in text and log.REDACTED in text


def test_nested_headers_are_redacted(render):
    text = render("json", request={"headers": {"X-BAPI-SIGN": SECRET, "X-BAPI-TIMESTAMP": "1"}, "path": "/v5/order"})

    body = json.loads(text)
    assert body["request"]["headers"]["X-BAPI-SIGN"] == log.REDACTED
    assert body["request"]["path"] == "/v5/order"
    assert SECRET not in text


def test_registered_secret_is_scrubbed_from_free_text(render):
    log.register_secret(SECRET)

    text = render("console", error=f"HTTP 401 for key {SECRET} on /v5/order/create")

    assert SECRET not in text and "/v5/order/create" in text


def test_innocent_names_are_kept(render):
    text = render("json", signal="long", design="x", keyboard="k")

    body = json.loads(text)
    assert (body["signal"], body["design"], body["keyboard"]) == ("long", "x", "k")
