"""Transports that carry ACIP packets to the room: TCP (tcp.py) and WebSocket (ws.py)."""
