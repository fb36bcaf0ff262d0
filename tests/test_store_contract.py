"""The event store's contract: append, idempotence, quarantine, reads, append-only."""

from __future__ import annotations

import sqlite3

import msgspec
import pytest

from tradebus.eventstore.store import EventIdConflict, EventStore, Rejected, StoreError, StoreLockedError
from tradebus.tests.samples import FIVE_MIN, T0, one_of_each


@pytest.fixture
def store(tmp_path):
    with EventStore.open_writer(tmp_path / "events.sqlite") as st:
        yield st


def test_append_assigns_gapless_seq_from_one(store, make):
    first = store.append([make.bar() for _ in range(3)])
    second = store.append([make.bar() for _ in range(2)])

    assert (first.first_seq, first.last_seq, first.appended) == (1, 3, 3)
    assert (second.first_seq, second.last_seq, second.appended) == (4, 5, 2)
    assert [r.seq for r in store.read()] == [1, 2, 3, 4, 5]


def test_read_returns_exactly_what_was_appended(store):
    sent = one_of_each()

    store.append(sent)

    assert [r.event for r in store.read()] == sent


def test_reappending_stored_events_is_a_reported_noop(store, make):
    batch = [make.bar() for _ in range(4)]
    store.append(batch)
    newer = make.bar()

    again = store.append([*batch[2:], newer])

    assert again.appended == 1
    assert again.duplicates == (batch[2].id, batch[3].id)
    assert [r.event for r in store.read()] == [*batch, newer]


def test_duplicate_within_one_batch_is_stored_once(store, make):
    e = make.bar()

    result = store.append([e, e])

    assert result.appended == 1 and result.duplicates == (e.id,)
    assert store.last_seq == 1


def test_same_id_with_other_content_is_a_conflict_and_appends_nothing(store, make):
    original = make.bar(close=100.0)
    store.append([original])
    forged = msgspec.structs.replace(original, close=999.0)
    innocent = make.bar()

    with pytest.raises(EventIdConflict, match=original.id):
        store.append([innocent, forged])

    assert [r.event for r in store.read()] == [original]
    assert store.append([innocent]).first_seq == 2  # seq stays gapless after the refused batch


def test_update_and_delete_are_refused_even_through_raw_sql(store, make, tmp_path):
    store.append([make.bar()])
    raw = sqlite3.connect(tmp_path / "events.sqlite")

    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE events SET system = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM events")
    raw.close()
    assert store.last_seq == 1


def test_reads_filter_by_position_system_type_run_and_time(store, make):
    bars = [make.bar(ts=T0 + i * FIVE_MIN) for i in range(5)]
    sig_a = make.signal("alpha")
    sig_b = make.signal("beta")
    intent = make.intent("alpha", "o1", run="r2")
    store.append([*bars, sig_a, sig_b, intent])

    by_pos = [r.seq for r in store.read(3, 5)]
    by_system = [r.event for r in store.read(system="alpha")]
    by_type = [r.event for r in store.read(types=["signal"])]
    by_run = [r.event for r in store.read(run="r2")]
    by_time = [r.event for r in store.read(types=["bar"], ts_from=T0 + FIVE_MIN, ts_to=T0 + 3 * FIVE_MIN)]

    assert by_pos == [3, 4, 5]
    assert by_system == [sig_a, intent]
    assert by_type == [sig_a, sig_b]
    assert by_run == [intent]
    assert by_time == bars[1:3]


def test_reads_page_through_large_results(store, make):
    sent = [make.bar(close=float(i)) for i in range(2_500)]
    store.append(sent)

    got = [r.event for r in store.read(batch=1000)]

    assert got == sent


def test_get_by_id(store, make):
    e = make.bar()
    store.append([make.bar(), e])

    assert store.get(e.id) == (2, e)
    assert store.get("nope") is None


def test_second_writer_in_same_process_is_refused(store, tmp_path):
    with pytest.raises(StoreLockedError, match="already open for writing"):
        EventStore.open_writer(tmp_path / "events.sqlite")


def test_reader_cannot_append(store, make, tmp_path):
    store.append([make.bar()])
    with EventStore.open_reader(tmp_path / "events.sqlite") as reader:
        with pytest.raises(StoreError, match="read-only"):
            reader.append([make.bar()])
        assert reader.last_seq == 1


def test_reader_sees_later_commits(store, make, tmp_path):
    with EventStore.open_reader(tmp_path / "events.sqlite") as reader:
        store.append([make.bar()])
        assert reader.last_seq == 1
        store.append([make.bar(), make.bar()])
        assert [r.seq for r in reader.read(2)] == [2, 3]


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no event store"):
        EventStore.open_reader(tmp_path / "absent.sqlite")


def test_info_counts_by_type_and_system(store, make):
    store.append([make.bar(), make.bar(), make.signal("alpha")])

    info = store.info()

    assert info.count == 3 and info.last_seq == 3
    assert info.by_type == {"bar": 2, "signal": 1}
    assert info.by_system == {"": 2, "alpha": 1}


def test_quarantine_takes_a_conflict_and_a_rejected_message_and_appends_the_rest(store, make):
    stored = make.bar(close=1.0)
    store.append([stored])
    impostor = msgspec.structs.replace(stored, close=2.0)
    fresh = make.bar()

    result = store.append([impostor, fresh], quarantine=True,
                          rejected=[Rejected(subject="tb.sig.x", payload=b"\xc1junk", reason="not an event")])
    again = store.append([impostor], quarantine=True)  # redelivered: quarantined once

    assert (result.appended, result.quarantined, again.appended) == (1, 2, 0)
    assert [r.event for r in store.read()] == [stored, fresh]
    rows = store.quarantined()
    assert sorted((r.subject, r.event_id) for r in rows) == [("tb.md.bar.bybit.BTCUSDT.5m", stored.id),
                                                             ("tb.sig.x", "")]
    assert any("already stored at seq 1 with different content" in r.reason for r in rows)
    assert store.info().quarantined == 2 and store.verify().quarantined == 2 and store.verify().ok


def test_a_conflict_within_one_batch_is_quarantined_after_the_first(store, make):
    first = make.bar(close=1.0)
    second = msgspec.structs.replace(first, close=2.0)

    result = store.append([first, second], quarantine=True)

    assert (result.appended, result.quarantined) == (1, 1)
    assert [r.event for r in store.read()] == [first]
    assert "earlier in the same batch" in store.quarantined()[0].reason
