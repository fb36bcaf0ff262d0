"""Codec throughput: tradebus msgpack and JSON against stdlib json and pickle, on a realistic event mix."""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import msgspec
from _common import best_of, codec_mix, consume, fmt_int, fmt_ratio, parser, print_header, print_table, resolve_n

from tradebus.bus import codec
from tradebus.bus.events import Event, tag_of

Op = Callable[[object], object]
PER_TYPE = 10_000


def identity(event: Event) -> Event:
    """Return the event unchanged (formats that take the Struct itself)."""
    return event


@dataclass(frozen=True)
class Format:
    """One serialisation: its encoder, its decoder, and how an event becomes the encoder's input."""

    name: str
    encode: Op
    decode: Op
    prepare: Op = identity


MSGPACK = Format("tradebus msgpack", codec.encode, codec.decode)
STDLIB_JSON = Format("stdlib json (dicts)", json.dumps, json.loads, msgspec.to_builtins)
FORMATS = (
    MSGPACK,
    Format("tradebus JSON", codec.to_json, codec.from_json),
    STDLIB_JSON,
    Format("pickle (Structs)", pickle.dumps, pickle.loads),
)


def check_round_trips(events: Sequence[Event]) -> list[str]:
    """Return a description of every event that does not survive a round trip through a format."""
    problems = []
    for fmt in FORMATS:
        for e in events:
            item = fmt.prepare(e)
            if fmt.decode(fmt.encode(item)) != item:
                problems.append(f"{fmt.name}: {tag_of(e)} {e.id} changed in a round trip")
    return problems


def measure(fmt: Format, events: Sequence[Event]) -> dict[str, float]:
    """Return encode and decode ops/s (best of 3) and mean encoded bytes for ``fmt`` over ``events``."""
    items = [fmt.prepare(e) for e in events]
    blobs = [fmt.encode(item) for item in items]
    encode_s = best_of(lambda: consume(map(fmt.encode, items)))
    decode_s = best_of(lambda: consume(map(fmt.decode, blobs)))
    size = sum(len(b.encode() if isinstance(b, str) else b) for b in blobs) / len(blobs)
    return {"encode": len(items) / encode_s, "decode": len(items) / decode_s, "bytes": size}


def mix_table(events: Sequence[Event]) -> None:
    """Measure every format on the whole mix and print ops/s and ratios against stdlib json."""
    results = {fmt.name: measure(fmt, events) for fmt in FORMATS}
    ref = results[STDLIB_JSON.name]
    rows = []
    for name, r in results.items():
        for op in ("encode", "decode"):
            rows.append((f"{name} {op}", fmt_int(r[op]), f"{1e6 / r[op]:.2f}", f"{r['bytes']:.0f}",
                         fmt_ratio(r[op] / ref[op])))
    print_table(f"Event mix, {len(events):,} events (best of 3)",
                ("codec / op", "ops/s", "us/op", "bytes/ev", "vs stdlib json"), rows)


def per_type_table(events: Sequence[Event]) -> None:
    """Print tradebus msgpack ops/s per event type, with the ratio against stdlib json per type."""
    rows = []
    for tag in dict.fromkeys(tag_of(e) for e in events):
        # Re-decoded copies lie contiguous in memory: a strided walk through the mix would measure
        # cache misses (2-3x slower for small events at n=200k), not the codec.
        subset = [codec.decode(codec.encode(e)) for e in events if tag_of(e) == tag][:PER_TYPE]
        ours, theirs = measure(MSGPACK, subset), measure(STDLIB_JSON, subset)
        rows.append((tag, f"{ours['bytes']:.0f}", fmt_int(ours["encode"]), fmt_ratio(ours["encode"] / theirs["encode"]),
                     fmt_int(ours["decode"]), fmt_ratio(ours["decode"] / theirs["decode"])))
    print_table(f"tradebus msgpack per event type, up to {PER_TYPE:,} each (best of 3)",
                ("type", "bytes", "encode/s", "vs json", "decode/s", "vs json"), rows)


def main() -> int:
    """Run the codec benchmark."""
    args = parser(__doc__, default_n=100_000, quick_n=20_000).parse_args()
    n = resolve_n(args)
    print_header("bench_codec", f"n={n:,}: 40% bar, 40% snapshot (20 features, 2 htf), 10% intent, 10% fill")
    events = codec_mix(n)
    problems = check_round_trips(events[:1000])
    if problems:
        print("\n".join(problems[:20]), file=sys.stderr)
        return 1
    mix_table(events)
    per_type_table(events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
