"""RenderSpec from real CLIENT_CAPABILITIES payloads (the shared vectors), decoded by the protocol package."""

import json
from pathlib import Path

import pytest

from asciichat_server.media import RenderSpec

payloads = pytest.importorskip("asciichat_server.protocol.payloads")
# The copy committed with the protocol tests, so a fresh clone needs nothing outside the repository.
VECTORS = Path(__file__).resolve().parents[1] / "protocol" / "data" / "vectors.json"


def vector(name: str) -> bytes:
    data = json.loads(VECTORS.read_text())
    return bytes.fromhex(next(v["hex"] for v in data["vectors"] if v["name"] == name))


@pytest.mark.parametrize("name", ["client_capabilities_payload_c41_160", "client_capabilities_payload_head_168"])
def test_browser_capabilities(name: str) -> None:
    # truecolor, foreground, 80x24, palette 1, wants_padding 1 (vectors.json descriptions)
    caps = payloads.ClientCapabilities.decode(vector(name))
    assert RenderSpec.from_capabilities(caps) == RenderSpec(
        80, 24, color_level=3, render_mode=0, palette="   ...',;:clodxkO0KXNWM", wants_padding=True
    )


def test_custom_palette_round_trip() -> None:
    caps = payloads.ClientCapabilities.decode(vector("client_capabilities_payload_c41_160"))
    raw = bytearray(caps.encode())
    raw[89:93] = (6).to_bytes(4, "big")
    raw[93:157] = "·•●⬤".encode().ljust(64, b"\0")
    raw[12:16] = (2).to_bytes(4, "big")  # half-block
    raw[159] = 0
    spec = RenderSpec.from_capabilities(payloads.ClientCapabilities.decode(bytes(raw)))
    assert (spec.palette, spec.render_mode, spec.wants_padding) == ("·•●⬤", 2, False)
