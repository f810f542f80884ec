"""Parse the client's target argument: ``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``ws://HOST:PORT/path``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DEFAULT_TCP_PORT", "DEFAULT_WS_PORT", "Target", "parse_target"]

# ascii-chat's defaults: TCP 27224, WebSocket 27226 (OPT_PORT_INT_DEFAULT, OPT_WEBSOCKET_PORT_SERVER_DEFAULT).
DEFAULT_TCP_PORT = 27224
DEFAULT_WS_PORT = 27226


@dataclass(frozen=True)
class Target:
    """Where to connect: ``kind`` is "tcp" or "ws"; ``url`` is set for WebSocket targets."""

    kind: str
    host: str
    port: int
    url: str = ""

    def __str__(self) -> str:
        if self.kind == "ws":
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"invalid port in {original!r} (expected 1-65535)")
    return int(text)


def parse_target(text: str, default_port: int | None = None) -> Target:
    """Turn the positional address into a :class:`Target`; raise ValueError with a readable reason."""
    original = text
    text = text.strip()
    if not text:
        raise ValueError("empty server address")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"unsupported scheme {parts.scheme!r} in {original!r} (use ws:// or wss://)")
        if not parts.hostname:
            raise ValueError(f"no host in {original!r}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"invalid port in {original!r}") from exc
        if port is None:
            port = default_port or (443 if parts.scheme == "wss" else DEFAULT_WS_PORT)
        host = parts.hostname
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        path = parts.path or "/"
        query = f"?{parts.query}" if parts.query else ""
        return Target("ws", host, port, f"{parts.scheme}://{netloc}{path}{query}")
    port = default_port or DEFAULT_TCP_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"missing ']' in {original!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected {rest!r} after ']' in {original!r}")
            port = _port(rest[1:], original)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, original)
    else:
        # A bare IPv6 address (several colons) or a bare host name: default port.
        host = text
    if not host:
        raise ValueError(f"no host in {original!r}")
    return Target("tcp", host, port)
