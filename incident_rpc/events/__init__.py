"""Change events: the journal, fan-out across workers, WebSocket subscribers."""
