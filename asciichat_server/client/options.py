"""The client's settings and how they become a CLIENT_CAPABILITIES payload."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import nacl.signing

from asciichat_server.client.address import Target

__all__ = ["COLOR_LEVELS", "PALETTES", "RENDER_MODES", "ClientOptions"]

#: --color-level name -> color_level value (ACIP.md 2.2.4) and the colour count that goes with it.
COLOR_LEVELS: dict[str, tuple[int, int]] = {"none": (0, 2), "16": (1, 16), "256": (2, 256), "truecolor": (3, 16777216)}
#: --palette name -> palette_type.
PALETTES: dict[str, int] = {"standard": 1, "blocks": 2, "digital": 3, "minimal": 4, "cool": 5, "custom": 6}
#: --render-mode name -> render_mode.
RENDER_MODES: dict[str, int] = {"foreground": 0, "background": 1, "half-block": 2}

# TERM_CAP bits of the capabilities field.
_CAP_16 = 0x01
_CAP_256 = 0x02
_CAP_TRUECOLOR = 0x04
_CAP_UTF8 = 0x08
_CAP_BACKGROUND = 0x10


def _truncate_utf8(text: str, limit: int) -> str:
    """Longest prefix of ``text`` whose UTF-8 form fits ``limit`` bytes (the fields are NUL-terminated)."""
    while len(text.encode("utf-8")) > limit:
        text = text[:-1]
    return text


@dataclass
class ClientOptions:
    target: Target
    width: int = 110
    height: int = 70
    fps: int = 60
    color_level: int = 0
    render_mode: int = 0
    palette_type: int = 1
    palette_chars: str = ""
    utf8: bool = True
    wants_padding: bool = True
    head_caps: bool = False
    encrypt: bool = True
    password: str | None = None
    server_key: bytes | None = None
    identity: nacl.signing.SigningKey | None = None
    key_variant: str = "c41"
    test_pattern: bool = True
    image_file: str | None = None
    snapshot: bool = False
    snapshot_delay_s: float = 3.0
    send_video: bool = True
    follow_terminal: bool = False  # track the terminal size (SIGWINCH) and re-send CLIENT_CAPABILITIES
    # Declare the server dead after this much silence (the server must send something every ~500 ms).
    silence_timeout_s: float = 5.0
    term_type: str = field(default_factory=lambda: os.environ.get("TERM", ""))
    colorterm: str = field(default_factory=lambda: os.environ.get("COLORTERM", ""))

    @property
    def color_count(self) -> int:
        return {0: 2, 1: 16, 2: 256, 3: 16777216}[self.color_level]

    @property
    def capability_bits(self) -> int:
        bits = {0: 0, 1: _CAP_16, 2: _CAP_16 | _CAP_256, 3: _CAP_16 | _CAP_256 | _CAP_TRUECOLOR}[self.color_level]
        if self.utf8:
            bits |= _CAP_UTF8
        if self.render_mode == 1:
            bits |= _CAP_BACKGROUND
        return bits

    def capabilities_fields(self) -> dict[str, object]:
        """Keyword arguments for protocol.payloads.ClientCapabilities (field names as in ACIP.md 2.2.4)."""
        fields: dict[str, object] = {
            "capabilities": self.capability_bits,
            "color_level": self.color_level,
            "color_count": self.color_count,
            "render_mode": self.render_mode,
            "width": self.width,
            "height": self.height,
            "term_type": _truncate_utf8(self.term_type, 31),
            "colorterm": _truncate_utf8(self.colorterm, 31),
            "detection_reliable": 1,
            "utf8_support": 1 if self.utf8 else 0,
            "palette_type": self.palette_type,
            "palette_custom": _truncate_utf8(self.palette_chars, 63) if self.palette_type == 6 else "",
            "desired_fps": self.fps,
            "color_filter": 0,
            "wants_padding": 1 if self.wants_padding else 0,
        }
        if self.head_caps:
            # HEAD's 168-byte layout: we send raw IMAGE_FRAMEs (bit0) and take Opus audio (bit1).
            fields["codec_video"] = 0x01
            fields["codec_audio"] = 0x02
        return fields
