"""The command line's conventions: help everywhere, -h, whole lines when piped."""

from __future__ import annotations

import typer

from tradebus.cli import app

from .proc import run_tradebus


def _commands(cmd, path=()):
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def test_every_command_option_and_argument_has_help():
    missing = [f"{path} {p.opts or p.name}" for path, cmd in _commands(typer.main.get_command(app))
               for p in cmd.params if p.name != "help" and not getattr(p, "help", None)]
    no_doc = [path for path, cmd in _commands(typer.main.get_command(app)) if not cmd.help]

    assert missing == [] and no_doc == []


def test_dash_h_is_help_at_every_level():
    for args in (("-h",), ("store", "-h"), ("data", "import", "-h"), ("experiments", "top", "-h")):
        done = run_tradebus(*args)
        assert done.returncode == 0 and "Usage:" in done.stdout, (args, done.stderr)


def test_piped_output_is_not_cut_to_80_columns():
    done = run_tradebus("strategies", env={"COLUMNS": ""})

    assert done.returncode == 0 and "\u2026" not in done.stdout
    assert "Buy a close below the lower band, sell above the upper; exit at the middle band." in done.stdout
    assert "PydanticUndefined" not in done.stdout and "entries (required)" in done.stdout
