"""Events and their codec: round trips, strictness, ids, subjects."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings

from tradebus.bus import codec, subjects
from tradebus.bus import events as ev
from tradebus.bus.ids import IdGenerator, decode_ulid, encode_ulid, id_time_ms, order_id_for
from tradebus.tests.samples import any_event, one_of_each, sample


@given(any_event)
@settings(max_examples=400, deadline=None)
def test_any_event_msgpack_round_trip_is_identity(event):
    assert codec.decode(codec.encode(event)) == event


@given(any_event)
@settings(max_examples=400, deadline=None)
def test_any_event_json_round_trip_is_identity(event):
    assert codec.from_json(codec.to_json(event)) == event


def test_every_type_has_a_distinct_stable_tag():
    tags = [cls.__struct_config__.tag for cls in ev.EVENT_TYPES]

    assert len(tags) == len(set(tags))
    # Stored events depend on these strings; changing one breaks every store written before.
    assert ev.TAGS["bar"] is ev.BarClosed
    assert ev.TAGS["order.rejected"] is ev.OrderRejected
    assert ev.TAGS["fill"] is ev.Fill


def test_events_are_frozen():
    bar = one_of_each()[0]

    with pytest.raises(AttributeError):
        bar.close = 1.0  # type: ignore[misc]


def test_unknown_tag_is_rejected_with_its_name():
    data = msgspec.msgpack.encode({"type": "bar.v99", "id": "x", "ts_event": 1, "ts_init": 1})

    with pytest.raises(codec.EventDecodeError, match="bar.v99"):
        codec.decode(data)


def _newer(event: ev.Event, **added: object) -> dict:
    """``event`` as a newer tradebus would write it: the same type with fields this one does not know."""
    raw = codec.to_builtins(event)
    raw.update(added)
    return raw


@pytest.mark.parametrize("cls", [ev.SweepTask, ev.RiskStateChanged, ev.BarClosed, ev.Snapshot])
def test_an_older_reader_takes_a_newer_event_from_the_bus_or_the_store(cls):
    event = sample(cls)
    raw = _newer(event, added_in_a_later_version=[1, 2], another={"x": 1.5})
    if cls is ev.SweepTask:
        raw["trials"] = [{**t, "priority": 3} for t in raw["trials"]]  # nested structs grow too
    if cls is ev.Snapshot:
        raw["bar"] = {**raw["bar"], "vwap": 1.0}

    assert codec.decode(msgspec.msgpack.encode(raw)) == event


def test_a_person_s_json_with_a_field_the_schema_lacks_is_refused_by_name():
    raw = _newer(one_of_each()[0], surprise=1)
    nested = codec.to_builtins(sample(ev.Snapshot))
    nested["bar"]["vwap"] = 1.0

    with pytest.raises(codec.EventDecodeError, match="no field 'surprise' in a BarClosed"):
        codec.from_json(msgspec.json.encode(raw))
    with pytest.raises(codec.EventDecodeError, match="'bar.vwap'"):
        codec.from_json(msgspec.json.encode(nested))
    assert codec.from_json(msgspec.json.encode(raw), strict=False) == one_of_each()[0]


def test_wrong_type_is_rejected_with_the_field_path():
    raw = codec.to_builtins(one_of_each()[0])
    raw["close"] = "not a number"

    with pytest.raises(codec.EventDecodeError, match="close"):
        codec.decode(msgspec.msgpack.encode(raw))


def test_bad_literal_is_rejected():
    raw = codec.to_builtins(sample(ev.Signal))
    raw["direction"] = "sideways"

    with pytest.raises(codec.EventDecodeError, match="direction"):
        codec.decode(msgspec.msgpack.encode(raw))


def test_missing_required_field_is_rejected():
    raw = codec.to_builtins(one_of_each()[0])
    del raw["symbol"]

    with pytest.raises(codec.EventDecodeError, match="symbol"):
        codec.decode(msgspec.msgpack.encode(raw))


@pytest.mark.parametrize("cut", [1, 5, 17, -1])
def test_truncated_bytes_are_rejected(cut):
    data = codec.encode(one_of_each()[1])

    with pytest.raises(codec.EventDecodeError, match="truncated|invalid|Expected"):
        codec.decode(data[:cut])


def test_optional_fields_default_so_old_events_still_decode():
    raw = codec.to_builtins(one_of_each()[0])
    del raw["turnover"], raw["system"], raw["run"], raw["cause"]

    bar = codec.decode(msgspec.msgpack.encode(raw))

    assert (bar.turnover, bar.system, bar.run, bar.cause) == (0.0, "", "", "")


# --- ids ------------------------------------------------------------------------------------------


def test_ulid_encoding_round_trips_and_sorts_numerically():
    values = [0, 1, 2**80, 2**127 + 12345, 2**128 - 1]

    encoded = [encode_ulid(v) for v in values]

    assert [decode_ulid(t) for t in encoded] == values
    assert encoded == sorted(encoded)
    assert all(len(t) == 26 for t in encoded)
    assert encode_ulid(2**128 - 1) == "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"  # the ULID spec's maximum


def test_ids_are_strictly_increasing_even_when_the_clock_steps_back():
    gen = IdGenerator()
    times = [5_000_000, 5_000_000, 4_000_000, 9_000_000, 9_000_001, 1]

    ids = [gen.next(t) for t in times]

    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert id_time_ms(ids[0]) == 5 and id_time_ms(ids[3]) == 9


def test_seeded_ids_are_reproducible_and_seed_specific():
    times = [T * 1_000_000 for T in (1, 1, 2, 3)]

    a = [IdGenerator("run-a").next(t) for t in times]
    a2 = [IdGenerator("run-a").next(t) for t in times]
    b = [IdGenerator("run-b").next(t) for t in times]

    assert a == a2
    assert a != b


def test_order_id_derives_from_cause_and_fits_bybit():
    cause = IdGenerator("x").next(10**18)

    oid = order_id_for(cause, "stop")

    assert oid == order_id_for(cause, "stop")
    assert oid != order_id_for(cause, "entry")
    assert len(oid) <= 36
    with pytest.raises(ValueError, match="36"):
        order_id_for(cause, "a-leg-name-that-is-far-too-long")
    with pytest.raises(ValueError):
        order_id_for(cause, "bad leg")


# --- subjects -------------------------------------------------------------------------------------


def test_each_sample_event_has_a_subject_under_the_prefix():
    for e in one_of_each():
        subject = subjects.subject_for(e)
        assert subjects.matches(subjects.ALL, subject), subject


def test_subject_scheme_examples():
    bar, snap, fc, sig = one_of_each()[:4]

    assert subjects.subject_for(bar) == "tb.md.bar.bybit.BTCUSDT.5m"
    assert subjects.subject_for(snap) == "tb.md.snap.bybit.BTCUSDT.5m"
    assert subjects.subject_for(fc) == "tb.fc.gbm.BTCUSDT"
    assert subjects.subject_for(sig) == "tb.sig.ema_rsi_btc"


def test_global_risk_event_uses_placeholder_system():
    risk = msgspec.structs.replace(sample(ev.RiskStateChanged), system="", scope="global")

    assert subjects.subject_for(risk) == "tb.risk._"


def test_system_with_a_dot_cannot_become_a_subject():
    sig = msgspec.structs.replace(sample(ev.Signal), system="bad.system")

    with pytest.raises(subjects.SubjectError, match="bad.system"):
        subjects.subject_for(sig)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("tb.>", "tb.md.bar.bybit.BTCUSDT.5m", True),
        ("tb.>", "tb", False),
        ("tb.md.*.bybit.*.5m", "tb.md.bar.bybit.ETHUSDT.5m", True),
        ("tb.md.*.bybit.*.5m", "tb.md.bar.bybit.ETHUSDT.1h", False),
        ("tb.*.sys1", "tb.ord.sys1", True),
        ("tb.*.sys1", "tb.ord.sys1.x", False),
        ("tb.ord.sys1", "tb.ord.sys1", True),
        ("tb.ord.sys1", "tb.ord.sys2", False),
    ],
)
def test_pattern_matching_follows_nats_rules(pattern, subject, expected):
    assert subjects.matches(pattern, subject) is expected


@pytest.mark.parametrize(
    ("typed", "qualified"),
    [(">", "tb.>"), ("ord.>", "tb.ord.>"), ("tb.fill.x", "tb.fill.x"), ("*.sys1", "tb.*.sys1"), ("foo.bar", "foo.bar")],
)
def test_qualify_adds_prefix_only_where_missing(typed, qualified):
    assert subjects.qualify(typed) == qualified


def test_seeded_id_depends_only_on_seed_millisecond_and_index():
    first = IdGenerator("run-a")
    all_ids = [first.next(t * 1_000_000) for t in (10, 10, 11, 12, 12, 12)]
    later = IdGenerator("run-a")  # starts at the 12th millisecond, never saw the earlier ones

    resumed = [later.next(12 * 1_000_000) for _ in range(3)]

    assert resumed == all_ids[3:]
