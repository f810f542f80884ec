"""What one receiver wants to see: terminal size, colour level, render mode and palette (ACIP.md 5.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Palettes 1-5, dark to light [ACIP.md 5.2; c41 include/ascii-chat/video/palette.h].
PALETTES: dict[int, str] = {
    1: "   ...',;:clodxkO0KXNWM",
    2: "   ░░▒▒▓▓██",
    3: "   -=≡≣▰▱◼",
    4: "   .-+*#",
    5: "   ▁▂▃▄▅▆▇█",
}
DEFAULT_PALETTE = PALETTES[1]
PALETTE_CUSTOM = 6

COLOR_NONE = 0
COLOR_16 = 1
COLOR_256 = 2
COLOR_TRUECOLOR = 3

RENDER_FOREGROUND = 0
RENDER_BACKGROUND = 1
RENDER_HALF_BLOCK = 2

# The C client accepts 1..16384 per axis; CLIENT_CAPABILITIES carries u16 values, the C server allows 1..4096.
MAX_DIMENSION = 4096


def palette_for(palette_type: int, custom: str | bytes = "") -> str:
    """The palette string for a CLIENT_CAPABILITIES palette_type; unknown or empty falls back to standard.

    Type 0 ("unset") makes the c41 server fail to render; a Python server is kinder and uses the default.
    """
    if palette_type == PALETTE_CUSTOM:
        if isinstance(custom, bytes):
            custom = custom.split(b"\0", 1)[0].decode("utf-8", "replace")
        custom = sanitize_palette(custom)
        return custom if custom else DEFAULT_PALETTE
    return PALETTES.get(palette_type, DEFAULT_PALETTE)


def sanitize_palette(palette: str) -> str:
    """Drop control characters: a newline or ESC in a palette would break the frame's row structure."""
    return "".join(ch for ch in palette if ch.isprintable())


@dataclass(frozen=True)
class RenderSpec:
    """Everything about a receiver that changes the frame text; equal specs get identical bytes."""

    cols: int
    rows: int
    color_level: int = COLOR_NONE
    render_mode: int = RENDER_FOREGROUND
    palette: str = DEFAULT_PALETTE
    wants_padding: bool = True

    def __post_init__(self) -> None:
        if not (1 <= self.cols <= MAX_DIMENSION and 1 <= self.rows <= MAX_DIMENSION):
            raise ValueError(f"terminal size {self.cols}x{self.rows} outside 1..{MAX_DIMENSION}")
        if self.color_level not in (COLOR_NONE, COLOR_16, COLOR_256, COLOR_TRUECOLOR):
            raise ValueError(f"color_level {self.color_level} not in 0..3")
        if self.render_mode not in (RENDER_FOREGROUND, RENDER_BACKGROUND, RENDER_HALF_BLOCK):
            raise ValueError(f"render_mode {self.render_mode} not in 0..2")
        if not self.palette:
            raise ValueError("empty palette")

    @property
    def half_block(self) -> bool:
        """Half-block needs colour; with color_level 0 it falls back to plain palette characters."""
        return self.render_mode == RENDER_HALF_BLOCK and self.color_level != COLOR_NONE

    @property
    def colored(self) -> bool:
        return self.color_level != COLOR_NONE

    @classmethod
    def from_capabilities(cls, caps: Any) -> RenderSpec:
        """Build from a decoded CLIENT_CAPABILITIES (any object with the ACIP.md 2.2.4 field names).

        Out-of-range values are clamped rather than rejected so one odd client never stops the room.
        """
        try:
            palette = getattr(caps, "palette_chars", None)
        except (ValueError, UnicodeDecodeError):
            palette = None  # a malformed custom palette: fall back below rather than refuse the client
        palette = sanitize_palette(palette) if palette else ""
        if not palette:
            palette = palette_for(int(getattr(caps, "palette_type", 1)), getattr(caps, "palette_custom", ""))
        color_level = int(getattr(caps, "color_level", 0))
        render_mode = int(getattr(caps, "render_mode", 0))
        if not int(getattr(caps, "utf8_support", 1)):
            # The client said its terminal cannot show UTF-8 (--utf8=false): keep the frame pure ASCII.
            if not palette.isascii():
                palette = DEFAULT_PALETTE
            if render_mode == RENDER_HALF_BLOCK:
                render_mode = RENDER_FOREGROUND
        return cls(
            cols=min(max(int(caps.width), 1), MAX_DIMENSION),
            rows=min(max(int(caps.height), 1), MAX_DIMENSION),
            color_level=color_level if 0 <= color_level <= 3 else COLOR_NONE,
            render_mode=render_mode if 0 <= render_mode <= 2 else RENDER_FOREGROUND,
            palette=palette,
            wants_padding=bool(getattr(caps, "wants_padding", 1)),
        )
