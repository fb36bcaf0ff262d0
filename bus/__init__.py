"""Message bus: events, subjects, codec, the Bus protocol and its in-process and NATS implementations."""
