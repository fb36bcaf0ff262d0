"""The pure core: indicators, strategies, risk, simulated exchange, portfolio. No asyncio, no I/O."""
