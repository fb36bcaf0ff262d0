"""Strategies: the API a strategy is written in (``api``, documented there), the built-ins written in it
(``builtin``), composable specs (``composable``) and regime switches (``adaptive``).

Write your own with ``tradebus strategies new NAME``; import what a strategy needs from here::

    from tradebus.components.strategies import FLAT, HOLD, LONG, SHORT, Field, Params, Strategy, f
"""

from tradebus.components.strategies.api import (DECIDE, ENTRY_POINTS, FLAT, HOLD, LONG, SHORT, FastSlowParams,
                                                Feature, Field, Params, Strategy, StrategyDef, StrategyError,
                                                decision_function, define, f, for_params, get, helper, known,
                                                register, require_below)

__all__ = ["DECIDE", "ENTRY_POINTS", "FLAT", "HOLD", "LONG", "SHORT", "FastSlowParams", "Feature", "Field", "Params",
           "Strategy", "StrategyDef", "StrategyError", "decision_function", "define", "f", "for_params", "get",
           "helper", "known", "register", "require_below"]
