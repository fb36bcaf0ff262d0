"""The one encoder/decoder for events: msgpack for the bus and the store, JSON for people.

Decoders are built once at import for the whole union. Decoding is strict: an unknown ``type`` tag, a
field the schema does not have, a wrong type or truncated bytes raise ``EventDecodeError`` naming what
was wrong, never a half-built event.
"""

from __future__ import annotations

import msgspec

from tradebus.bus.events import AnyEvent, Event


class EventDecodeError(ValueError):
    """Bytes that are not a valid tradebus event."""


_mp_encoder = msgspec.msgpack.Encoder()
_mp_decoder = msgspec.msgpack.Decoder(AnyEvent)
_json_encoder = msgspec.json.Encoder(order="deterministic")
_json_decoder = msgspec.json.Decoder(AnyEvent)

encode = _mp_encoder.encode
"""Encode one event as msgpack bytes."""


def decode(data: bytes | memoryview) -> Event:
    """Decode msgpack bytes into an event."""
    try:
        return _mp_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise EventDecodeError(f"not a valid event ({len(data)} bytes of msgpack): {exc}") from None


def to_json(event: Event) -> bytes:
    """Encode one event as JSON (stable key order, for people and exports)."""
    return _json_encoder.encode(event)


def from_json(data: bytes | str) -> Event:
    """Decode one JSON event."""
    try:
        return _json_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise EventDecodeError(f"not a valid event (JSON): {exc}") from None


def to_builtins(event: Event) -> dict:
    """Return the event as plain dicts/lists/scalars (``type`` included)."""
    return msgspec.to_builtins(event)
