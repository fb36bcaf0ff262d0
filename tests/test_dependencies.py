"""Every library the package imports is declared in pyproject.toml (tests' and benchmarks' in their
extras), and the pybit the adapter reaches into is pinned to one minor version."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _imports(files: list[Path]) -> set[str]:
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "tradebus"}


def _undeclared(files: list[Path], declared: set[str]) -> list[str]:
    dists = packages_distributions()
    missing = []
    for module in sorted(_imports(files)):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared:
            missing.append(f"{module} ({', '.join(sorted(names))})")
    return missing


def test_the_package_imports_only_what_it_declares():
    runtime = [p for p in ROOT.rglob("*.py") if not {"tests", "bench"} & set(p.relative_to(ROOT).parts)]
    assert _undeclared(runtime, _names(PROJECT["dependencies"])) == []


def test_tests_import_only_what_the_test_extra_adds():
    declared = _names(PROJECT["dependencies"]) | _names(PROJECT["optional-dependencies"]["test"])
    assert _undeclared(list((ROOT / "tests").rglob("*.py")), declared) == []


def test_pybit_is_pinned_to_one_minor_version():
    (pin,) = [r for r in PROJECT["dependencies"] if r.startswith("pybit")]
    low, high = re.fullmatch(r"pybit>=(\d+\.\d+),<(\d+\.\d+)", pin).groups()
    major, minor = map(int, low.split("."))
    assert high == f"{major}.{minor + 1}"


def test_the_wheel_holds_every_package_and_no_tests():
    """Every folder with an ``__init__.py`` ships (a subpackage left off the list works in a checkout and is
    missing from the wheel); the tests do not."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("tradebus", *p.parent.relative_to(ROOT).parts))
             for p in ROOT.rglob("__init__.py") if ".git" not in p.parts}
    assert listed == found - {"tradebus.tests"}
