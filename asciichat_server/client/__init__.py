"""Reference ACIP client: `asciichat-client` (TCP or WebSocket) on the sans-I/O protocol core."""
