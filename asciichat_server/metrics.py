"""Server counters, shared by every transport (the WS site renders them as Prometheus text)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Metrics"]


@dataclass
class Metrics:
    """Plain counters; updated from the event loop thread only, so no locking."""

    connections_total: int = 0
    connections_active: int = 0
    handshakes_ok: int = 0
    handshakes_failed: int = 0
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    reassembly_timeouts: int = 0
    slots_used: int = 0
    slots_max: int = 0
    rejected_full: int = 0
    rejected_rate: int = 0
    rejected_pending: int = 0
    protocol_errors: int = 0
    timeouts: int = 0
    dropped_frames: int = 0

    def as_dict(self) -> dict[str, int]:
        """Counter name -> value."""
        return asdict(self)
