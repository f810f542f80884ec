"""Plain HTTP on the WebSocket port: ``GET /health`` (JSON) and ``GET /metrics`` (Prometheus text).

The C server (HEAD) answers ``/health`` the same way on its WebSocket port (ACIP.md 6.1).
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from typing import Any, Protocol

from aiohttp import web

from asciichat_server import __version__
from asciichat_server.metrics import Metrics
from asciichat_server.protocol.constants import PROTOCOL_VERSION_MAJOR, PROTOCOL_VERSION_MINOR

__all__ = ["ACIP_VERSION", "PROMETHEUS_CONTENT_TYPE", "handle", "health_payload", "render_prometheus"]

# The version our PROTOCOL_VERSION packets carry (ACIP.md 2.2.1); HEAD's /health shows its label
# constant "2.2.1" instead, which never reaches the wire.
ACIP_VERSION = f"{PROTOCOL_VERSION_MAJOR}.{PROTOCOL_VERSION_MINOR}"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "asciichat_"

# Metrics field -> (exported name, type, help, labels). Labelled pairs share one family.
_KNOWN: dict[str, tuple[str, str, str, str]] = {
    "connections_total": ("connections_total", "counter", "Client connections accepted (TCP and WebSocket).", ""),
    "connections_active": ("connections_active", "gauge", "Client connections open now.", ""),
    "handshakes_ok": ("handshakes_total", "counter", "ACIP handshakes by outcome.", 'result="ok"'),
    "handshakes_failed": ("handshakes_total", "counter", "ACIP handshakes by outcome.", 'result="failed"'),
    "frames_in": (
        "frames_total",
        "counter",
        "Video frames: received IMAGE_FRAME/IMAGE_FRAME_H265 (in), sent ASCII_FRAME (out).",
        'direction="in"',
    ),
    "frames_out": (
        "frames_total",
        "counter",
        "Video frames: received IMAGE_FRAME/IMAGE_FRAME_H265 (in), sent ASCII_FRAME (out).",
        'direction="out"',
    ),
    "bytes_in": ("bytes_total", "counter", "Bytes of ACIP packets of every type, by direction.", 'direction="in"'),
    "bytes_out": ("bytes_total", "counter", "Bytes of ACIP packets of every type, by direction.", 'direction="out"'),
    "reassembly_timeouts": (
        "reassembly_timeouts_total",
        "counter",
        "WebSocket messages dropped because their fragments stopped arriving.",
        "",
    ),
    "slots_used": ("slots_used", "gauge", "Client slots in use.", ""),
    "slots_max": ("slots_max", "gauge", "Client slots available in total (--max-clients).", ""),
    "rejected_full": ("rejected_full_total", "counter", "Connections refused because every slot was taken.", ""),
    "rejected_rate": (
        "rejected_rate_limited_total",
        "counter",
        "Connections refused because their address opened more than --max-connect-rate a second.",
        "",
    ),
    "rejected_pending": (
        "rejected_pending_total",
        "counter",
        "Connections refused because their address already had --max-pending-per-ip handshakes open.",
        "",
    ),
    "protocol_errors": ("protocol_errors_total", "counter", "Connections ended by a protocol violation.", ""),
    "timeouts": ("timeouts_total", "counter", "Connections ended by a handshake or idle timeout.", ""),
    "dropped_frames": ("dropped_frames_total", "counter", "Outgoing frames dropped for slow receivers.", ""),
}


class _State(Protocol):
    metrics: Metrics
    links: Any
    started_at: float
    stopping: bool


def health_payload(metrics: Metrics, websocket_clients: int, uptime_s: float, stopping: bool = False) -> dict[str, Any]:
    """The /health document: HEAD's keys (status, version, protocol) plus slot usage."""
    used = metrics.slots_used
    return {
        "status": "stopping" if stopping else "ok",
        "version": __version__,
        "protocol": ACIP_VERSION,
        "clients": used,
        "slots_free": max(0, metrics.slots_max - used),
        "max_clients": metrics.slots_max,
        "connections_active": metrics.connections_active,
        "websocket_clients": websocket_clients,
        "uptime_s": round(uptime_s, 3),
    }


def render_prometheus(metrics: Metrics, extra_gauges: dict[str, tuple[float, str]] | None = None) -> str:
    """Prometheus text exposition (format 0.0.4) of every Metrics field, plus ``extra_gauges``.

    Fields this module does not know yet are still exported, as untyped ``asciichat_<field>``,
    so a counter added to Metrics shows up without touching this file.
    """
    families: dict[str, tuple[str, str, list[tuple[str, float]]]] = {}
    for field in fields(metrics):
        value = getattr(metrics, field.name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        name, kind, help_text, labels = _KNOWN.get(field.name, (field.name, "untyped", f"Metrics.{field.name}", ""))
        family = families.setdefault(_PREFIX + name, (kind, help_text, []))
        family[2].append((labels, value))
    if _PREFIX + "slots_max" in families and _PREFIX + "slots_used" in families:
        free = max(0, metrics.slots_max - metrics.slots_used)
        families[_PREFIX + "slots_free"] = ("gauge", "Client slots free now.", [("", free)])
    for name, (value, help_text) in (extra_gauges or {}).items():
        families[_PREFIX + name] = ("gauge", help_text, [("", value)])
    lines: list[str] = []
    for name, (kind, help_text, samples) in families.items():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = f"{{{labels}}}" if labels else ""
            lines.append(f"{name}{label_text} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


async def handle(request: web.BaseRequest, state: _State) -> web.StreamResponse:
    """Answer a non-upgrade request on the WebSocket port."""
    path = request.path.rstrip("/") or "/"
    if path not in ("/health", "/metrics", "/stats"):
        raise web.HTTPNotFound(text="not found (WebSocket upgrades are served on any path)\n")
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    uptime = time.monotonic() - state.started_at
    if path == "/metrics":
        text = render_prometheus(
            state.metrics,
            {
                "websocket_clients": (len(state.links), "WebSocket connections open now."),
                "uptime_seconds": (round(uptime, 3), "Seconds since the WebSocket port opened."),
            },
        )
        return web.Response(body=text.encode("utf-8"), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})
    if path == "/stats":
        body: dict[str, Any] = dict(state.metrics.as_dict())
    else:
        body = health_payload(state.metrics, len(state.links), uptime, state.stopping)
    return web.Response(
        text=json.dumps(body) + "\n",
        content_type="application/json",
        status=503 if state.stopping and path == "/health" else 200,
    )
