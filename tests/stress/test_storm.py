"""Reconnect storm mixing TCP and WS, clean and abrupt: afterwards no slot, task, fd or log error is left."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


s = _load("_stress_support", HERE / "_support.py")
bench = _load("_stress_bench", HERE.parent.parent / "bench" / "stress.py")

pytestmark = pytest.mark.stress

CYCLES = 140  # 20 of each kind; bench/stress.py runs 10,000


async def test_mixed_storm_leaks_nothing(caplog):
    caplog.set_level(logging.DEBUG)
    server = bench.AsciiChatServer(s.make_config(addresses=["127.0.0.1"], websocket=True, websocket_port=0))
    await server.start()
    loop_errors = s.LoopErrors()
    try:
        # One /health request first, so aiohttp's lazily created objects exist before the baseline.
        assert (await s.health(server.ws_port))["status"] == "ok"
        fds0, tasks0 = s.fd_count(), s.task_count()
        result = await bench.run_storm(server, CYCLES, parallel=4, seed=1)
        print(f"storm: {result.cycles} cycles in {result.elapsed_s:.2f}s, outcomes {dict(result.outcomes)}")
        assert result.cycles == CYCLES
        assert not result.failures, result.failures[:5]
        assert result.outcomes.get("full", 0) <= CYCLES // 10, result.outcomes
        assert len([k for k in bench.KINDS if result.outcomes[k] > 0]) == len(bench.KINDS), result.outcomes

        assert await s.settle(lambda: server.room.client_count == 0 and server.metrics.slots_used == 0)
        assert server.metrics.connections_active == 0
        assert server.room.slots_free == server.config.max_clients
        # The WS transport forgets a link once its close handshake ends (up to a second after the room).
        for _ in range(100):
            health = await s.health(server.ws_port)
            if health["websocket_clients"] == 0:
                break
            await asyncio.sleep(0.1)
        assert await s.settle(lambda: s.task_count() <= tasks0), (tasks0, s.task_count())
        assert await s.settle(lambda: s.fd_count() <= fds0), (fds0, s.fd_count())
    finally:
        await server.stop()
    assert not loop_errors.restore()
    assert not s.bad_records(caplog.records)
    assert health["clients"] == 0 and health["connections_active"] == 0, health
    assert health["websocket_clients"] == 0 and health["slots_free"] == health["max_clients"], health
