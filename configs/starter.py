"""``tradebus init``: a starter system config for a strategy, symbol and timeframe (pure text; the command
line writes it and says which data commands fill what it reads)."""

from __future__ import annotations

import re
from typing import Any

from tradebus.components import strategies
from tradebus.configs import yamlfile
from tradebus.configs.schema import ConfigError, SystemConfig, parse_config


def starter(strategy_id: str, symbol: str, timeframe: str) -> tuple[str, SystemConfig, str]:
    """(system name, the validated config, its YAML with comments). Raises ConfigError for a bad choice."""
    try:
        defn = strategies.get(strategy_id)
    except strategies.StrategyError as exc:
        raise ConfigError(f"--strategy: {exc}") from None
    try:
        params: dict[str, Any] = defn.params().model_dump(mode="json")
    except ValueError:  # a strategy whose parameters have no defaults: the user fills them in
        params = {}
    # Only the chosen values are checked below (a bad symbol is named once, as the symbol).
    system = re.sub(r"[^A-Za-z0-9_-]", "_", f"{strategy_id.split(':')[-1].lower()}_{symbol.lower()}_{timeframe}")[:64]
    data = {
        "system": system, "symbol": symbol, "timeframe": timeframe,
        "windows": {"hygiene": {"preset": "first_70pct"}, "test": {"preset": "last_30pct"}},
        "strategy": {"id": strategy_id, "params": params},
        "risk": {"sizing": "risk_per_trade", "risk_per_trade": 0.01, "max_leverage": 3,
                 "stop": {"kind": "atr", "atr_period": 14, "atr_mult": 2.0}},
        "costs": {"maker_fee": 0.0002, "taker_fee": 0.00055, "spread_bps": 1.0,
                  "slippage": {"model": "fixed_bps", "bps": 1.0}, "funding": True},
        "fill": "next_open", "initial_capital": 10_000,
    }
    config = parse_config(data, f"starter config for {strategy_id}")
    head = (f"# {system}: {defn.description or strategy_id}\n"
            "# Tune on the hygiene window (first 70% of the data); run --window test once, when you are done:\n"
            "# a test window looked at while tuning is no longer out of sample.\n"
            "# Risk: 1% of equity lost if the ATR stop is hit, at most 3x leverage. Costs: Bybit's taker fee,\n"
            "# a 1 bp spread and 1 bp slippage, funding charged on mark prices.\n")
    return system, config, head + yamlfile.dumps(data)
