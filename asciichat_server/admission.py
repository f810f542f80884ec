"""Per-IP admission: how fast one address may open connections, and how many may sit in a handshake.

A slot is taken at accept, so without these a single address could keep every slot busy with
connections that never finish their handshake, or churn through slots faster than clients can use
them. Both limits are off (0) unless configured: ``--max-connect-rate`` and ``--max-pending-per-ip``.

The rate limit is a token bucket per address (``rate`` new connections a second, bursts of up to
``burst``), fed the event loop's clock by the caller, so it holds no clock of its own.
"""

from __future__ import annotations

import itertools

__all__ = ["ConnectRateLimiter", "peer_host"]

# Buckets kept before idle (full) ones are dropped: bounds memory under a flood of source addresses.
MAX_TRACKED_ADDRESSES = 4096


def peer_host(peer: str) -> str:
    """The address part of a ``Link.peer`` (``127.0.0.1:5000`` -> ``127.0.0.1``, ``[::1]:5000`` -> ``::1``)."""
    host, sep, _port = peer.rpartition(":")
    if not sep:
        return peer
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class ConnectRateLimiter:
    """Token bucket per address; ``allow(host, now)`` takes one token or says no."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, round(2 * rate)))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, at)

    def allow(self, host: str, now: float) -> bool:
        # pop + insert keeps the dict in order of last use, oldest first (for _prune)
        tokens, at = self._buckets.pop(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[host] = (tokens, now)
        if len(self._buckets) > MAX_TRACKED_ADDRESSES:
            self._prune(now)
        return allowed

    def retry_after(self, host: str, now: float) -> float:
        """Seconds until ``host`` has a token again (0 when it has one now)."""
        tokens, at = self._buckets.get(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    @property
    def tracked(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: forget those. If a flood of distinct
        # addresses leaves too many, drop the least recently used down to 3/4 of the bound, so the
        # scan runs once per MAX_TRACKED_ADDRESSES / 4 new addresses at most.
        for host in [h for h, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]:
            del self._buckets[host]
        excess = len(self._buckets) - MAX_TRACKED_ADDRESSES * 3 // 4
        if excess > 0:
            for host in list(itertools.islice(self._buckets, excess)):
                del self._buckets[host]
