"""The model registry in the data home: versions of each forecaster, and which one is promoted.

``$TRADEBUS_HOME/models/MODEL/VERSION/`` holds ``manifest.json`` (what built it: dataset, inputs, spec,
code digest; its training window and validity; its walk-forward metrics beside its baselines') and one
LightGBM text file per booster. A version is the first 12 hex characters of SHA-256 over the dataset's
content id, the model file's canonical JSON and the code digest: the same data, settings and code give
the same version, anything else a new one. A version folder is written under a temporary name and
renamed, so it is whole or absent.

``MODEL/history.jsonl`` is append-only: one line per promotion or rollback (time, action, version, from,
reason). The promoted version is the last line's; a rollback returns to the version promoted before the
current one (promotions stack; a rollback pops one). Nothing is ever deleted, so every forecast ever published names a version that can be
loaded again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tradebus.components.forecast import CRASH_DRAWDOWN, Model
from tradebus.engine import artifacts

BOOSTERS = ("return", "logvar", "regime")


class RegistryError(ValueError):
    """A model or version that is not there, or an action that cannot be taken; says what is there."""


@dataclass
class Version:
    model_id: str
    version: str
    path: Path
    manifest: dict


def models_dir(home: Path) -> Path:
    return home / "models"


def save(home: Path, model: Model, manifest: dict) -> Version:
    """Write a trained version (a version already stored is left as it is: same inputs, same content)."""
    folder = models_dir(home) / model.model_id / model.version
    if not (folder / "manifest.json").exists():
        tmp = folder.with_name(f".{model.version}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in BOOSTERS:
            artifacts.atomic_write(tmp / f"{name}.txt", model.boosters[name].encode())
        artifacts.write_json(tmp / "manifest.json", manifest)
        shutil.rmtree(folder, ignore_errors=True)  # a folder without a manifest is a torn earlier write
        tmp.replace(folder)
    return Version(model.model_id, model.version, folder, json.loads((folder / "manifest.json").read_text()))


def versions(home: Path, model_id: str) -> list[Version]:
    """Every stored version of a model, oldest first (by training time)."""
    folder = models_dir(home) / model_id
    out = []
    for man in folder.glob("*/manifest.json") if folder.exists() else ():
        if man.parent.name.startswith("."):
            continue
        out.append(Version(model_id, man.parent.name, man.parent, json.loads(man.read_text())))
    return sorted(out, key=lambda v: (v.manifest.get("created", ""), v.version))


def model_ids(home: Path) -> list[str]:
    folder = models_dir(home)
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and versions(home, p.name)) if folder.exists() else []


def get(home: Path, model_id: str, version: str) -> Version:
    """One version; a RegistryError names the versions there are."""
    found = {v.version: v for v in versions(home, model_id)}
    if version not in found:
        there = ", ".join(found) or "none"
        raise RegistryError(f"model {model_id!r} has no version {version!r} (stored: {there})"
                            if found or model_ids(home) else f"no models are stored in {models_dir(home)}")
    return found[version]


def history(home: Path, model_id: str) -> list[dict]:
    path = models_dir(home) / model_id / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def promoted(home: Path, model_id: str) -> str | None:
    """The promoted version, or None."""
    h = history(home, model_id)
    return h[-1]["version"] if h else None


def append_line(path: Path, entry: dict) -> None:
    """Append one JSON line to a model's log (its history, the comparisons made with it), fsynced."""
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of one line in append mode: whole or absent
        os.fsync(fd)
    finally:
        os.close(fd)


def promote(home: Path, model_id: str, version: str, reason: str = "") -> dict:
    """Make ``version`` the one forecasters load."""
    get(home, model_id, version)
    current = promoted(home, model_id)
    if current == version:
        raise RegistryError(f"{model_id} {version} is already the promoted version")
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "action": "promote", "version": version,
             "from": current, "reason": reason}
    append_line(models_dir(home) / model_id / "history.jsonl", entry)
    return entry


def _stack(entries: list[dict]) -> list[str]:
    """The promotion stack: a promotion pushes its version, a rollback pops the current one."""
    stack: list[str] = []
    for e in entries:
        if e["action"] == "promote":
            stack.append(e["version"])
        elif stack:
            stack.pop()
    return stack


def rollback(home: Path, model_id: str, reason: str = "") -> dict:
    """Promote again the version that was promoted before the current one (twice: the one before that)."""
    stack = _stack(history(home, model_id))
    if not stack:
        raise RegistryError(f"{model_id}: nothing is promoted, so there is nothing to roll back")
    if len(stack) < 2:
        raise RegistryError(f"{model_id}: {stack[-1]} was the first version promoted; there is none before it")
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "action": "rollback",
             "version": stack[-2], "from": stack[-1], "reason": reason}
    append_line(models_dir(home) / model_id / "history.jsonl", entry)
    return entry


def load(home: Path, model_id: str, version: str | None = None) -> Model:
    """A stored version (the promoted one by default) ready to predict."""
    if version is None:
        version = promoted(home, model_id)
        if version is None:
            there = ", ".join(v.version for v in versions(home, model_id)) or "none"
            raise RegistryError(f"model {model_id!r} has no promoted version (stored: {there}); "
                                f"tradebus forecast promote {model_id} VERSION")
    v = get(home, model_id, version)
    m = v.manifest
    return Model(model_id=model_id, version=version, timeframe=m["timeframe"], horizon=m["horizon"],
                 inputs=list(m["inputs"]), trained_until=m["trained_until_ns"], valid_until=m["valid_until_ns"],
                 vol_scale=m["vol_scale"], boosters={b: (v.path / f"{b}.txt").read_text() for b in BOOSTERS},
                 crash_drawdown=m.get("spec", {}).get("crash_drawdown", CRASH_DRAWDOWN))
