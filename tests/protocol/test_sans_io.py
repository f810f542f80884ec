"""The protocol core stays sans-I/O: no module under protocol/ imports an event loop, sockets or a clock."""

from __future__ import annotations

import ast
from pathlib import Path

import asciichat_server.protocol as protocol

FORBIDDEN = {"asyncio", "aiohttp", "socket", "time", "selectors", "threading"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_io_imports_in_protocol_package() -> None:
    files = sorted(Path(protocol.__file__).parent.glob("*.py"))
    assert len(files) >= 9
    offenders = {f.name: sorted(_imported_roots(f) & FORBIDDEN) for f in files}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_checker_would_notice(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import asyncio\nfrom time import monotonic\nfrom . import sibling\n")
    assert _imported_roots(sample) & FORBIDDEN == {"asyncio", "time"}


def test_public_surface_is_importable_and_short() -> None:
    assert 20 <= len(protocol.__all__) <= 45
    for name in protocol.__all__:
        assert hasattr(protocol, name), name
