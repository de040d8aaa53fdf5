"""The thin REST + WebSocket edge: validates, writes the store, publishes to the broker."""
