"""The ``tradebus`` command line: one module per area, each registering its commands on ``common.app``;
what a command does lives in the packages (this only parses, calls and reports)."""

from tradebus.cli import backbone, daemons, data, factory, forecast, lifecycle, research, runs, strategies  # noqa: F401, E501 - they register commands
from tradebus.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``tradebus`` console script."""
    app()
