"""Historical sources, replay publisher and clock, backtest runner."""
