"""Bad settings files are refused before anything acts: one short error naming the file, the field (or line)
and the value, a non-zero exit, no traceback, nothing written. Variants of the shipped example config."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tradebus.configs.schema import ConfigError, load_config
from tradebus.configs.yamlfile import MAX_BYTES

from .proc import run_tradebus

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "examples" / "sma_cross_btc_5m.yaml"
TEXT = EXAMPLE.read_text()


def _variant(old: str, new: str) -> str:
    assert old in TEXT, old
    return TEXT.replace(old, new, 1)


BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1, 2, 3, 4, 5, 6, 7, 8, 9'}]\n"
               for i in range(9))

# (name, file text, what the error must say)
CASES = [
    ("feb30", _variant("start: 2025-01-01", "start: 2025-02-30"), ["windows.hygiene.start", "2025-02-30"]),
    ("month13", _variant("end: 2026-07-21", "end: 2026-13-01"), ["windows.test.end", "2026-13-01"]),
    ("duplicate key", TEXT + "fill: on_close\n", ["line 15", "'fill' is given twice", "first on line 13"]),
    ("infinite capital", _variant("initial_capital: 10000", "initial_capital: .inf"), ["initial_capital", "finite"]),
    ("nan fraction", _variant("fraction: 0.95", "fraction: .nan"), ["risk.fraction", "finite"]),
    ("boolean period", _variant("fast: 10", "fast: yes"), ["fast", "a number, not the boolean True"]),
    ("huge integer", _variant("fast: 10", "fast: 99999999999999999999999"), ["line 10", "out of range"]),
    ("alias bomb", BOMB + TEXT, ["aliases", "expanded"]),
    ("recursive alias", "a: &a [*a]\n" + TEXT, ["refers to itself"]),
]


@pytest.mark.parametrize("name,text,says", CASES, ids=[c[0] for c in CASES])
def test_a_bad_config_is_one_clear_error(tmp_path, name, text, says):
    path = tmp_path / "bad.yaml"
    path.write_text(text)

    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path)

    message = str(err.value)
    assert time.perf_counter() - t0 < 2, "refused at once, not after expanding anything"
    assert message.startswith(str(path)) and len(message) < 1500, message
    for part in says:
        assert part in message, f"{part!r} not in: {message}"


def test_encodings_sizes_and_unreadable_files(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(TEXT.replace("The classic", "Le classique \xe9").encode("latin-1"))
    big = tmp_path / "big.yaml"
    big.write_text(TEXT + "#" * MAX_BYTES)
    cases = [(latin, "not UTF-8 text"), (big, "at most 1,048,576"), (tmp_path / "missing.yaml", "cannot read"),
             (tmp_path, "cannot read")]
    for path, says in cases:
        with pytest.raises(ConfigError, match=says):
            load_config(path)


def test_the_example_and_yaml_it_may_use_still_load(tmp_path):
    assert load_config(EXAMPLE).system == "sma_cross_btc_5m"
    anchors = tmp_path / "anchors.yaml"  # anchors and merge keys are fine within the bounds
    anchors.write_text(TEXT.replace("costs: {", "costs: &costs {") + "x_note: *costs\n")
    with pytest.raises(ConfigError, match="x_note"):  # an unknown key, named, rather than a YAML error
        load_config(anchors)


def test_the_cli_refuses_without_a_traceback_and_writes_nothing(tmp_path):
    store = tmp_path / "events.sqlite"
    for name, text, says in (CASES[0], CASES[2], CASES[7]):
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text)
        done = run_tradebus("replay", str(path), "--store", str(store), "--out", str(tmp_path / "out"),
                            env={"TRADEBUS_HOME": str(tmp_path / "home")})
        assert done.returncode != 0, name
        assert "Traceback" not in done.stderr and len(done.stderr) < 2000, done.stderr
        assert says[0] in done.stderr, done.stderr
    assert not store.exists() and not (tmp_path / "out").exists()
    # The shipped example itself is unchanged by any of this.
    assert yaml.safe_load(EXAMPLE.read_text())["system"] == "sma_cross_btc_5m"
