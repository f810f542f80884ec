"""Shared helpers for the stress suite: the server and WS test clients (loaded by path), leak counters."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

TESTS = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path) -> ModuleType:
    # --import-mode=importlib makes conftest modules unimportable by name; load them once by path.
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


server_helpers = _load("_stress_server_conftest", TESTS / "server" / "conftest.py")
ws_helpers = _load("_stress_ws_conftest", TESTS / "ws" / "conftest.py")

RawClient = server_helpers.RawClient  # TCP: raw bytes, reset() = RST
AcipClient = server_helpers.AcipClient  # TCP: full ACIP client (ClientConnection)
AcipWsClient = ws_helpers.AcipWsClient  # WS: full ACIP client over aiohttp
RawWsClient = ws_helpers.RawWsClient  # WS: frames written exactly as told (wsproto)
caps_payload = server_helpers.caps_payload
image_payload = server_helpers.image_payload
stream_payload = server_helpers.stream_payload
make_config = server_helpers.make_config
wait_until = server_helpers.wait_until


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    """Live asyncio tasks other than the current one."""
    current = asyncio.current_task()
    return sum(1 for t in asyncio.all_tasks() if t is not current and not t.done())


async def settle(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` (collecting garbage between polls) until true or ``timeout``; return the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        gc.collect()
        if predicate():
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)


def bad_records(records: list[logging.LogRecord]) -> list[str]:
    """Log records that betray a bug: ERROR and above, tracebacks, never-retrieved task exceptions."""
    return [
        r.getMessage()
        for r in records
        if r.levelno >= logging.ERROR
        or r.exc_info
        or "Traceback" in r.getMessage()
        or "never retrieved" in r.getMessage()
    ]


class LoopErrors:
    """Installs an exception handler on the running loop and keeps what it sees."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.loop = asyncio.get_running_loop()
        self.previous = self.loop.get_exception_handler()
        self.loop.set_exception_handler(lambda _loop, ctx: self.errors.append(ctx))

    def restore(self) -> list[dict[str, Any]]:
        gc.collect()
        self.loop.set_exception_handler(self.previous)
        return self.errors


async def health(port: int) -> dict[str, Any]:
    """The server's GET /health document (on the WebSocket port)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as resp:
        return await resp.json()
