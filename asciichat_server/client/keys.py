"""Parsing of --server-key (the server identity the client pins)."""

from __future__ import annotations

import base64
import binascii
import os
import re

__all__ = ["parse_server_key"]


def parse_server_key(text: str) -> bytes:
    """--server-key: ``ssh-ed25519 AAAA... [comment]``, 64 hex characters, or a file holding either."""
    text = text.strip()
    if text and not text.startswith("ssh-") and not re.fullmatch(r"[0-9a-fA-F]{64}", text) and os.path.isfile(text):
        with open(text, encoding="utf-8") as fh:
            lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        if not lines:
            raise ValueError(f"no key in {text!r}")
        text = lines[0]
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    parts = text.split()
    if len(parts) >= 2 and parts[0] == "ssh-ed25519":
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except binascii.Error as exc:
            raise ValueError("server key: bad base64 in ssh-ed25519 key") from exc
        # SSH wire format: string "ssh-ed25519", string key(32).
        name_len = int.from_bytes(blob[:4], "big")
        name = blob[4 : 4 + name_len]
        rest = blob[4 + name_len :]
        key_len = int.from_bytes(rest[:4], "big")
        key = rest[4 : 4 + key_len]
        if name != b"ssh-ed25519" or key_len != 32 or len(key) != 32:
            raise ValueError("server key: not a valid ssh-ed25519 public key")
        return key
    raise ValueError("server key must be 'ssh-ed25519 AAAA...' or 64 hex characters (or a file with one)")
