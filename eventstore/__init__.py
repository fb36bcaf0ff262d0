"""Append-only event store, readers, recorder, projections and rebuild."""
