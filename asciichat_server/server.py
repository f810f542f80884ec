"""`AsciiChatServer`: binds the listeners, owns the room, starts the WebSocket site if installed."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import socket
import time
from typing import Any

from asciichat_server import __version__
from asciichat_server.config import ServerConfig, load_client_keys, load_identity_key, openssh_public_line
from asciichat_server.metrics import Metrics
from asciichat_server.net import BindError, bind_listeners, listener_address
from asciichat_server.protocol.connection import ServerSecurity
from asciichat_server.protocol.crypto import derive_password_key
from asciichat_server.room import Room
from asciichat_server.transport.tcp import start_tcp

__all__ = ["WS_MODULE", "AsciiChatServer", "build_security"]

_log = logging.getLogger(__name__)

WS_MODULE = "asciichat_server.transport.ws"
# Time stop() may spend closing clients (WS and TCP together); leaves margin within the 2 s SIGINT rule.
SHUTDOWN_BUDGET_S = 1.2


async def build_security(config: ServerConfig) -> ServerSecurity:
    """Load keys and derive the password key (Argon2id, ~64 MiB: once here, never per connection)."""
    identity = load_identity_key(config.key_file) if config.key_file else None
    client_keys = load_client_keys(config.client_keys_file) if config.client_keys_file else None
    password_key = None
    if config.password:
        started = time.perf_counter()
        password_key = await asyncio.to_thread(derive_password_key, config.password)
        _log.debug("password key derived in %.0f ms", (time.perf_counter() - started) * 1000)
    return ServerSecurity(
        encrypt=config.encrypt,
        identity=identity,
        password_key=password_key,
        client_keys=client_keys,
        signature_auth_variant=config.signature_auth_variant,
    )


class AsciiChatServer:
    """One server: TCP listeners (and WS when available) feeding one `Room`."""

    version = __version__

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.security: ServerSecurity | None = None
        self.room: Room | None = None
        self.addresses: list[str] = []
        self.tcp_addresses: list[str] = []
        self.ws_addresses: list[str] = []
        self._tcp_servers: list[asyncio.Server] = []
        self._ws: Any = None
        self._started = False
        self._stopped = False
        self.started_at: float | None = None

    @property
    def tcp_port(self) -> int:
        """Port of the TCP listeners (useful after binding port 0)."""
        return int(self.tcp_addresses[0].rsplit(":", 1)[1]) if self.tcp_addresses else 0

    @property
    def ws_port(self) -> int:
        return int(self.ws_addresses[0].rsplit(":", 1)[1]) if self.ws_addresses else 0

    async def start(self) -> None:
        """Bind everything, start serving, then log one `[READY]` line. Raises on failure (nothing left open)."""
        if self._started:
            return
        self._started = True
        self.config.validate()
        self.security = await build_security(self.config)
        if self.security.identity is not None:
            _log.info("server identity: %s", openssh_public_line(self.security.identity.verify_key))
        self.room = Room(self.config, self.security, self.metrics)
        tcp_sockets: list[socket.socket] = []
        try:
            tcp_sockets = await asyncio.to_thread(
                bind_listeners,
                self.config.addresses,
                self.config.port,
                self.config.bind_retries,
                self.config.bind_backoff_s,
                _log,
            )
            self.room.start()
            self._tcp_servers = await start_tcp(self.room, tcp_sockets)
            self.tcp_addresses = [listener_address(s) for s in tcp_sockets]
            await self._start_ws()
        except BaseException:
            await self._teardown()
            for sock in tcp_sockets:
                sock.close()
            raise
        self.addresses = [f"tcp://{a}" for a in self.tcp_addresses] + [f"ws://{a}" for a in self.ws_addresses]
        self.started_at = time.time()
        _log.info(
            "[READY] listening on %s (max clients %d, %s)",
            ", ".join(self.addresses),
            self.config.max_clients,
            "encrypted" if self.config.encrypt else "plaintext",
        )

    async def _start_ws(self) -> None:
        if not self.config.websocket:
            return
        if importlib.util.find_spec(WS_MODULE) is None:
            _log.debug("WebSocket transport not installed; TCP only")
            return
        module = importlib.import_module(WS_MODULE)
        try:
            ws_sockets = await asyncio.to_thread(
                bind_listeners,
                self.config.addresses,
                self.config.websocket_port,
                self.config.bind_retries,
                self.config.bind_backoff_s,
                _log,
            )
        except BindError as exc:
            raise BindError(exc.failures, "WebSocket") from None
        try:
            self._ws = await module.start_ws(self, ws_sockets)
        except BaseException:
            for sock in ws_sockets:
                sock.close()
            raise
        addresses = getattr(self._ws, "addresses", None)
        self.ws_addresses = list(addresses) if addresses else [listener_address(s) for s in ws_sockets]

    async def stop(self) -> None:
        """Stop accepting, close every client (each frees its slot), release the ports. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._teardown()
        _log.info("server stopped")

    async def _teardown(self) -> None:
        # Budget: SIGINT must end the process within 2 s (issue 4), so WS and room close in parallel.
        for server in self._tcp_servers:
            server.close()
        closing = []
        if self._ws is not None:
            closing.append(asyncio.wait_for(self._ws.close(), SHUTDOWN_BUDGET_S))
            self._ws = None
        if self.room is not None:
            closing.append(self.room.shutdown(SHUTDOWN_BUDGET_S))
        for result in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(result, TimeoutError):
                _log.warning("shutdown: %s", result)
        for server in self._tcp_servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 0.3)
        self._tcp_servers = []

    async def __aenter__(self) -> AsciiChatServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
