"""Bybit (pybit) feed and execution, reconciliation, demo/live daemons."""
