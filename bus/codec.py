"""The one encoder/decoder for events: msgpack for the bus and the store, JSON for people.

Decoders are built once at import for the whole union. An unknown ``type`` tag, a wrong type, a value
out of range or truncated bytes raise ``EventDecodeError`` naming what was wrong, never a half-built event.

The wire is tolerant, input is strict. The bus and the store (msgpack) ignore fields the schema does not
have: the schema evolves by adding defaulted fields, so an older worker or daemon must still take a newer
task or kill command. JSON from people (``publish``) is strict: a field the schema does not have is a
typo, refused by name.
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


def from_json(data: bytes | str, *, strict: bool = True) -> Event:
    """Decode one JSON event; ``strict`` refuses fields the schema does not have."""
    try:
        event = _json_decoder.decode(data)
        unknown = _unknown(msgspec.json.decode(data), to_builtins(event), "") if strict else []
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise EventDecodeError(f"not a valid event (JSON): {exc}") from None
    if unknown:
        raise EventDecodeError(f"not a valid event (JSON): no field {', '.join(unknown)} in a {type(event).__name__}")
    return event


def _unknown(given: object, known: object, at: str) -> list[str]:
    """The keys of ``given`` that decoding dropped (every field is encoded back, so a missing key was not
    in the schema)."""
    if isinstance(given, dict) and isinstance(known, dict):
        out = []
        for key, value in given.items():
            path = f"{at}{key}"
            out.extend([repr(path)] if key not in known else _unknown(value, known[key], f"{path}."))
        return out
    if isinstance(given, list) and isinstance(known, list):
        return [u for i, (g, k) in enumerate(zip(given, known)) for u in _unknown(g, k, f"{at}{i}.")]
    return []


def to_builtins(event: Event) -> dict:
    """Return the event as plain dicts/lists/scalars (``type`` included)."""
    return msgspec.to_builtins(event)
