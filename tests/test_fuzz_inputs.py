"""Fuzz every input path with malformed variants of the shipped examples.

Two layers:
- property tests (hypothesis) feed mutated versions of every shipped config (systems, sweeps, scenarios,
  limits, portfolios) and of event lines to the loaders in-process: each either loads or raises the one
  error type its command reports, starting with the file's name and bounded in length; nothing else;
- a fixed sample of the same malformations, plus broken market data files, key files and publish files,
  runs through the real commands in subprocesses: non-zero exit, no traceback, bounded output and time,
  and every file under the test's folder (store, market data, experiments, data home) unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradebus.bus import codec, subjects
from tradebus.configs.forecast import load_model_spec
from tradebus.configs.limits import load_limits
from tradebus.configs.portfolio import load_portfolio
from tradebus.configs.schema import ConfigError, load_config, read_yaml
from tradebus.configs.yamlfile import dumps
from tradebus.factory.scenarios import load_scenarios
from tradebus.factory.sweep import load_job

from .proc import run_tradebus
from .samples import one_of_each
from .test_bad_input import BOMB

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LOADERS: dict[str, Callable[[Path], Any]] = {
    "examples": load_config, "sweeps": load_job, "scenarios": load_scenarios, "portfolios": load_portfolio,
    "limits": load_limits, "forecasts": load_model_spec, "composites": load_config,
}
SHIPPED = sorted([*CONFIGS.glob("examples/*.yaml"), *CONFIGS.glob("sweeps/*.yaml"), *CONFIGS.glob("scenarios/*.yaml"),
                  *CONFIGS.glob("portfolios/*.yaml"), *CONFIGS.glob("forecasts/*.yaml"),
                  *CONFIGS.glob("composites/*.yaml"), CONFIGS / "limits.example.yaml"])
MAX_MESSAGE = 3000


def _kind(path: Path) -> str:
    return "limits" if "limits" in path.name else path.parent.name


def _leaves(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into the document (mappings and lists), the root's children included."""
    out = []
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return out
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_leaves(v, (*prefix, k)))
    return out


def _set(data: Any, path: tuple, value: Any, *, delete: bool = False, sibling: bool = False) -> None:
    node = data
    for k in path[:-1]:
        node = node[k]
    if sibling and isinstance(node, dict):
        node["unknown_field_x"] = value
    elif delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value


BAD_VALUES = ["x", -1, 0, -1e308, 10**30, math.nan, math.inf, -math.inf, True, None, [], {}, "2025-02-30",
              "2025-13-01", "", "é" * 300, [1, [2, [3]]]]


def _mutate_text(text: str, how: str, at: float) -> bytes:
    """A text-level mutation: what breaks the YAML itself rather than a value."""
    cut = int(len(text) * at)
    if how == "truncate":
        return text[:cut].encode()
    if how == "duplicate":  # the first top-level line again at the end
        first = next(line for line in text.splitlines() if line and line[0].isalpha())
        return (text + "\n" + first + "\n").encode()
    if how == "bomb":
        return (BOMB + text).encode()
    if how == "latin1":
        return text[:cut].encode() + b"\xe9\xff" + text[cut:].encode()
    if how == "tab":
        return (text[:cut] + "\t\x00" + text[cut:]).encode()
    raise AssertionError(how)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of configs/: portfolios name their systems by relative path."""
    root = tmp_path_factory.mktemp("configs")
    shutil.copytree(CONFIGS, root / "configs", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root / "configs"


def _check_load(path: Path) -> None:
    loader = LOADERS[_kind(path)]
    t0 = time.perf_counter()
    try:
        loader(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)), message[:300]
        assert len(message) < MAX_MESSAGE, message[:300]
    assert time.perf_counter() - t0 < 30, "a hang guard: every file here is small"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(SHIPPED), pick=st.integers(0, 10**6), value=st.sampled_from(BAD_VALUES),
       action=st.sampled_from(["replace", "replace", "delete", "sibling"]))
def test_mutated_values_load_or_fail_with_one_clear_error(tree, which, pick, value, action):
    path = tree / which.relative_to(CONFIGS)
    data = read_yaml(which)
    leaves = _leaves(data)
    target = leaves[pick % len(leaves)]
    _set(data, target, value, delete=action == "delete", sibling=action == "sibling")
    mutated = path.with_name(f"fuzz_{path.name}")
    mutated.write_text(dumps(data))

    _check_load(mutated)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(SHIPPED), how=st.sampled_from(["truncate", "duplicate", "bomb", "latin1", "tab"]),
       at=st.floats(0.0, 1.0))
def test_broken_yaml_fails_with_one_clear_error(tree, which, how, at):
    path = tree / which.relative_to(CONFIGS)
    mutated = path.with_name(f"fuzz_{path.name}")
    mutated.write_bytes(_mutate_text(which.read_text(), how, at))

    _check_load(mutated)


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                        st.text(max_size=40), st.lists(st.integers(), max_size=3))


@settings(max_examples=400, deadline=None)
@given(index=st.integers(0, 100), field=st.integers(0, 100), value=JSON_VALUES)
def test_mutated_event_lines_decode_or_fail_with_a_decode_error(index, field, value):
    events = one_of_each()
    doc = json.loads(codec.to_json(events[index % len(events)]))
    key = sorted(doc)[field % len(doc)]
    doc[key] = value
    line = json.dumps(doc, allow_nan=True)
    try:
        event = codec.from_json(line)
        subjects.subject_for(event)
    except (codec.EventDecodeError, subjects.SubjectError) as exc:
        assert len(str(exc)) < MAX_MESSAGE
        return
    assert codec.from_json(codec.to_json(event)) == event  # what decodes also round-trips


# --- the real commands ---------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(result, *says: str) -> None:
    text = result.stdout + result.stderr
    assert result.returncode != 0, text[:500]
    assert "Traceback" not in text, text[-2000:]
    assert len(text) < MAX_MESSAGE, f"{len(text)} characters: {text[:500]}"
    for part in says:
        assert part in text, f"{part!r} not in: {text[:800]}"


def _candles(n: int = 50) -> dict[str, np.ndarray]:
    t0 = 1_735_689_600  # 2025-01-01, epoch seconds
    close = 100 + np.arange(n) * 0.1
    return {"open_time": (t0 + 300 * np.arange(n)) * 1000, "open": close, "high": close + 1, "low": close - 1,
            "close": close, "volume": np.ones(n)}


def _parquet(path: Path, cols: dict) -> Path:
    pq.write_table(pa.table(cols), path)
    return path


def _data_cases(d: Path) -> list[tuple[str, list[Path], list[str]]]:
    good = _parquet(d / "BTCUSDT.parquet", _candles())
    truncated = d / "TRUNC.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    mislabelled = d / "CSVREALLY.parquet"
    mislabelled.write_text("open_time,open,high,low,close,volume\n1,2,3,1,2,5\n")
    nan_time = _candles()
    nan_time["open_time"] = nan_time["open_time"].astype(float)
    nan_time["open_time"][3] = np.nan
    null_volume = {**_candles(), "volume": pa.array([None] * 50, type=pa.float64())}
    seconds_as_ns = {**_candles(), "open_time": _candles()["open_time"] // 10**6}  # 1970 if read as-is
    far_future = {**_candles(), "open_time": (4_102_444_800 + 300 * np.arange(50)) * 1000}  # 2100
    bad_ohlc = {**_candles(), "low": _candles()["high"] + 5}
    return [
        ("truncated", [truncated], ["TRUNC.parquet", "not a readable parquet file"]),
        ("mislabelled", [mislabelled], ["CSVREALLY.parquet", "not a readable parquet file"]),
        ("nan time", [_parquet(d / "NANT.parquet", nan_time)], ["NANT.parquet", "non-finite time"]),
        ("null volume", [_parquet(d / "NULLV.parquet", null_volume)], ["'volume' is empty in 50 of 50 rows"]),
        ("tiny epoch", [_parquet(d / "TINY.parquet", seconds_as_ns)], ["outside 2000-01-01"]),
        ("far future", [_parquet(d / "FAR.parquet", far_future)], ["outside 2000-01-01"]),
        ("empty csv", [d / "EMPTY.csv"], ["EMPTY.csv"]),
        ("second file bad", [good, _parquet(d / "ETHUSDT.parquet", bad_ohlc)],
         ["ETHUSDT.parquet", "inconsistent OHLC", "nothing imported"]),
    ]


def test_broken_market_data_files_import_nothing(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "EMPTY.csv").write_text("")
    home = tmp_path / "home"
    db = home / "market.duckdb"
    ok = run_tradebus("data", "import", str(_parquet(files / "SOLUSDT.parquet", _candles())), "--db", str(db))
    assert ok.returncode == 0, ok.stderr
    before = _snapshot(home)
    for name, paths, says in _data_cases(files):
        t0 = time.perf_counter()
        result = run_tradebus("data", "import", *map(str, paths), "--db", str(db))
        assert time.perf_counter() - t0 < 60, name  # a hang guard
        _refused(result, *says)
        assert _snapshot(home) == before, name


KEY_CASES = [
    ("not utf-8", b"\xff\xfe key\nsecret\n", "not UTF-8"),
    ("three lines", b"a\nb\nc\n", "found 3 non-empty line(s)"),
    ("json without secret", b'{"key": "abc"}', "expected JSON"),
    ("a control character", b"abc\x07def\nsecretsecret\n", "the key must be"),
    ("a number for the secret", b'{"key": "abc", "secret": 12345}', "the secret must be"),
    ("huge", b"k" * 100_000, "larger than 4,096 bytes"),
]


@pytest.mark.parametrize("name,content,says", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_bad_key_files_are_refused_without_showing_them(tmp_path, name, content, says):
    keys = tmp_path / "keys"
    keys.write_bytes(content)
    keys.chmod(0o600)
    home = tmp_path / "home"

    result = run_tradebus("demo", str(CONFIGS / "examples" / "sma_cross_btc_5m.yaml"), "--keys", str(keys),
                          env={"TRADEBUS_HOME": str(home), "TRADEBUS_DEMO_API_KEY": "", "TRADEBUS_DEMO_API_SECRET": ""})

    _refused(result, str(keys), says)
    assert "secretsecret" not in result.stderr and "12345" not in result.stderr
    assert not home.exists() or not _snapshot(home)


def _bad_config_runs(d: Path, tree: Path) -> list[tuple[str, list[str], list[str]]]:
    """One malformed variant of each kind of shipped config, through the command that reads it."""
    def variant(rel: str, old: str, new: str) -> Path:
        src = tree / rel
        text = src.read_text()
        assert old in text, (rel, old)
        out = src.with_name(f"bad_{len(list(src.parent.glob('bad_*')))}_{src.name}")
        out.write_text(text.replace(old, new, 1))
        return out

    example = str(tree / "examples" / "sma_cross_btc_5m.yaml")
    return [
        ("system", ["replay", str(variant("examples/sma_cross_btc_5m.yaml", "fast: 10", "fast: .nan"))],
         ["strategy.params.fast"]),
        ("sweep", ["sweep", str(variant("sweeps/sma_cross_quick.yaml", "job: ", "jobb: "))], ["jobb"]),
        ("scenario", ["scenarios", str(variant("scenarios/trend_4h.yaml", "candidates: 24", "candidates: -3"))],
         ["candidates"]),
        ("portfolio", ["paper", str(variant("portfolios/btc_eth.yaml", "weight: 0.5", "weight: .inf"))],
         ["weight"]),
        ("limits", ["demo", example, "--limits", str(variant("limits.example.yaml", "max_leverage:",
                                                             "max_leverage: yes\n  x_max_leverage:"))],
         ["limits"]),
        ("bomb", ["replay", str(variant("examples/sma_cross_btc_5m.yaml", "system:", BOMB + "system:"))],
         ["aliases"]),
    ]


def test_malformed_configs_through_their_commands_change_nothing(tmp_path, tree):
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep.txt").write_text("the data home before")
    env = {"TRADEBUS_HOME": str(home), "TRADEBUS_DEMO_API_KEY": "k", "TRADEBUS_DEMO_API_SECRET": "s"}
    before = _snapshot(home)
    for name, args, says in _bad_config_runs(tmp_path, tree):
        t0 = time.perf_counter()
        result = run_tradebus(*args, env=env)
        assert time.perf_counter() - t0 < 60, name  # a hang guard
        _refused(result, *says)
        assert _snapshot(home) == before, name


async def test_a_bad_publish_file_publishes_nothing(tmp_path, make):
    import nats

    from tradebus.bus.natsserver import start_server
    from tradebus.eventstore.recorder import EVENT_STREAM

    server = await start_server(tmp_path / "nats")
    try:
        good = codec.to_json(make.bar()).decode()
        doc = json.loads(good)
        cases = [
            ("bad subject token", {**json.loads(codec.to_json(make.signal("alpha"))), "system": "a.b"}, "subject"),
            ("negative time", {**doc, "ts_event": -5}, "ts_event"),
            ("time past 2**63", {**doc, "ts_init": 2**63}, "ts_init"),
            ("empty id", {**doc, "id": ""}, "id"),
            ("oversized", {**doc, "id": "big", "symbol": "B" * 2_000_000}, "bytes encoded"),
            ("not json", "{not json", ":2"),
        ]
        for name, bad, says in cases:
            feed = tmp_path / "feed.jsonl"
            feed.write_text(good + "\n" + (bad if isinstance(bad, str) else json.dumps(bad)) + "\n")
            result = run_tradebus("publish", str(feed), "--nats-url", server.url)
            _refused(result, "feed.jsonl:2", says, "nothing published")
        nc = await nats.connect(server.url)
        try:
            streams = [s.config.name for s in await nc.jetstream().streams_info()]
            held = (await nc.jetstream().stream_info(EVENT_STREAM)).state.messages if EVENT_STREAM in streams else 0
        finally:
            await nc.close()
        assert held == 0
    finally:
        server.stop()
