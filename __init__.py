"""tradebus: an event-sourced, message-bus trading system and strategy factory."""

__version__ = "0.1.0"
