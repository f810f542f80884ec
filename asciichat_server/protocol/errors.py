"""The one exception a misbehaving peer produces, carrying the reason and the error code to send back."""

from __future__ import annotations

from .constants import ErrorCode


class ProtocolError(Exception):
    """A peer violated ACIP. `reason` is one human line; `error_code` goes into ERROR_MESSAGE (44)."""

    def __init__(self, reason: str, error_code: int = ErrorCode.NETWORK_PROTOCOL) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = int(error_code)

    def __repr__(self) -> str:
        return f"ProtocolError({self.reason!r}, error_code={self.error_code})"
