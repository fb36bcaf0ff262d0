"""What replay, paper, demo and live share: wiring a system's components, hosts, the snapshot builder, the
guard stage, market data and what every run reports (ledger, metrics, artifacts). Only the edges differ:
the bar source, the clock, the venue and the bus."""
