"""Risk limits: the hard caps a daemon enforces, from a human-edited YAML file.

They live apart from system configs on purpose: a system config may be written by a sweep or an LLM,
and nothing a system (or an agent) writes may raise a cap. ``global`` caps the whole account; each
entry under ``systems`` caps one system. A cap left out is not enforced; fractions are of equity::

    global:
      max_leverage: 3               # account notional / account equity
      max_orders_per_minute: 30
      max_daily_loss: 0.05          # from the UTC day's starting equity -> reducing until the next day
      max_drawdown: 0.2             # from peak equity -> halted until a person resumes
    systems:
      sma_cross_btc_5m:
        max_position_notional: 20000
        max_leverage: 1.5
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from tradebus.configs.schema import _Strict, parse_model, read_yaml


class Caps(_Strict):
    max_position_notional: float | None = Field(None, gt=0, description="USDT, |position| x price")
    max_leverage: float | None = Field(None, gt=0, le=100, description="notional / equity")
    max_orders_per_minute: int | None = Field(None, gt=0, description="orders sent in any 60 s")
    max_daily_loss: float | None = Field(None, gt=0, lt=1, description="share of the UTC day's starting equity")
    max_drawdown: float | None = Field(None, gt=0, lt=1, description="share of peak equity")


class Limits(_Strict):
    global_: Caps = Field(Caps(), alias="global")
    systems: dict[str, Caps] = {}

    def for_system(self, system: str) -> Caps:
        return self.systems.get(system, Caps())


DEMO_DEFAULTS = Limits.model_validate({"global": {"max_leverage": 3.0, "max_orders_per_minute": 30,
                                                  "max_daily_loss": 0.05, "max_drawdown": 0.2}})
"""What a demo daemon enforces when no limits file is given (a live daemon requires one)."""


def load_limits(path: Path | str) -> Limits:
    data = read_yaml(path)
    return parse_model(Limits, {} if data is None else data, path, "a limits file")
