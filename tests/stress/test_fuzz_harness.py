"""bench/fuzz.py at CI size: a few thousand mutated packets through every target, zero crashes, every
rejection a ProtocolError with a reason; and the mutator really reaches past the header checks."""

from __future__ import annotations

import importlib.util
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


fuzz = _load("_stress_fuzz", HERE.parent.parent / "bench" / "fuzz.py")

pytestmark = pytest.mark.stress


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_packets_never_crash_the_core(seed):
    result = fuzz.fuzz(3000, seed=seed)
    assert result.inputs == 3000
    assert not result.crashes, result.crashes[:3]
    # Every target got its share and both outcomes happen: the fuzzer is neither blocked nor idle.
    assert set(result.targets) == {"decoder", "payload", "server-tcp", "server-ws"}
    assert min(result.targets.values()) > 500
    assert result.accepted > 300 and sum(result.rejections.values()) > 1500
    reasons = " | ".join(result.rejections)
    # Rejections come from deep inside, not only from the header: payload decoders and the handshake speak.
    assert "payload must be" in reasons or "must be N bytes" in reasons, reasons[:500]
    assert "bad magic" in reasons and "mismatch" in reasons


def test_seeds_are_valid_packets():
    from asciichat_server.protocol.packets import PacketDecoder

    seeds = fuzz.seed_packets()
    assert len(seeds) >= 25
    for seed in seeds:
        (packet,) = PacketDecoder().feed(seed)
        assert packet.type > 0


def test_a_planted_crash_is_reported(monkeypatch):
    """The harness can fail: a decoder that raises something other than ProtocolError is counted."""

    def broken(_data: bytes) -> object:
        raise IndexError("planted")

    monkeypatch.setattr(fuzz, "_decoders", lambda: dict.fromkeys(range(0, 70000), broken))
    result = fuzz.fuzz(200, seed=5)
    assert result.crashes and all("IndexError" in c for c in result.crashes)
