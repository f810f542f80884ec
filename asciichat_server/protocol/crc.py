"""CRC-32C (Castagnoli), the checksum of every ACIP header; not zlib's IEEE CRC-32."""

from __future__ import annotations

import google_crc32c


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of `data`; crc32c(b"123456789") == 0xE3069283."""
    return google_crc32c.value(bytes(data))
