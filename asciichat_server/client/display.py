"""Writes received ASCII frames: cursor-home redraws on a terminal, one plain frame per block when piped."""

from __future__ import annotations

from typing import IO

__all__ = ["CLEAR_SCREEN", "CURSOR_HOME", "FrameDisplay"]

CURSOR_HOME = "\x1b[H"
CLEAR_SCREEN = "\x1b[2J"
_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"
_RESET = "\x1b[0m"


class FrameDisplay:
    """Shows frames like the C client: on a TTY it clears before the first frame and whenever the server
    says the room changed (SERVER_STATE active count, CLEAR_CONSOLE), then writes ESC[H + frame; piped, it
    writes each frame followed by a newline and nothing else."""

    def __init__(self, out: IO[str], tty: bool, max_fps: float | None = None) -> None:
        self.out = out
        self.tty = tty
        self.frames_shown = 0
        self.frames_dropped = 0
        self._needs_clear = True
        self._last_active: int | None = None
        # On a terminal, like the C client, frames arriving faster than our fps are dropped (the C server
        # sends up to 60/s whatever we ask for); 10 % slack so jitter does not drop frames sent at our fps.
        self._min_interval_s = 0.9 / max_fps if (tty and max_fps) else 0.0
        self._last_shown = -1e9

    def request_clear(self) -> None:
        self._needs_clear = True

    def server_state(self, active: int) -> None:
        if self._last_active is not None and active != self._last_active:
            self._needs_clear = True
        self._last_active = active

    def offer(self, text: str, now: float) -> bool:
        """Show a live frame unless it comes too soon after the last one (terminal only); True if shown."""
        if now - self._last_shown < self._min_interval_s and not self._needs_clear:
            self.frames_dropped += 1
            return False
        self._last_shown = now
        self.show(text)
        return True

    def show(self, text: str) -> None:
        if self.tty:
            prefix = _HIDE_CURSOR + CLEAR_SCREEN if self._needs_clear else ""
            self.out.write(prefix + CURSOR_HOME + text)
        else:
            self.out.write(text if text.endswith("\n") else text + "\n")
        self._needs_clear = False
        self.out.flush()
        self.frames_shown += 1

    def finish(self) -> None:
        """Leave the terminal usable: reset colours, show the cursor, end the line."""
        if self.tty and self.frames_shown:
            self.out.write(_RESET + _SHOW_CURSOR + "\n")
            self.out.flush()
