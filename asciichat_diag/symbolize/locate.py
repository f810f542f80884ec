"""Find the files behind module names: overrides, search paths, maps paths, build-id and .gnu_debuglink.

Order for a binary: --exe/--lib override by basename, then --search-path directories (a crash from
another machine), then the path printed in the input, then /usr/lib/debug/.build-id/xx/rest.debug.
Separate debug files: build-id directories first, then .gnu_debuglink beside the binary, in .debug/,
and under each debug directory (the order gdb documents).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field

DEFAULT_DEBUG_DIRS = ("/usr/lib/debug",)


@dataclass
class Locator:
    exe: str | None = None
    libs: list[str] = field(default_factory=list)
    search_paths: list[str] = field(default_factory=list)
    debug_dirs: list[str] = field(default_factory=lambda: list(DEFAULT_DEBUG_DIRS))

    def overrides(self) -> dict[str, str]:
        out = {}
        for p in [*self.libs, *([self.exe] if self.exe else [])]:
            out[os.path.basename(p)] = p
        return out

    def find_binary(self, name: str, build_id: str | None = None) -> str | None:
        """The file to read for a module printed as `name` (a basename or a path from another machine)."""
        base = os.path.basename(name.rstrip("/"))
        over = self.overrides()
        if base in over:
            return over[base]
        if name in over.values():
            return name
        for directory in self.search_paths:
            hit = _search(directory, name, base)
            if hit:
                return hit
        if os.path.isabs(name) and os.path.isfile(name):
            return name
        if build_id:
            hit = self.find_by_build_id(build_id)
            if hit:
                return hit
        return None

    def find_by_build_id(self, build_id: str) -> str | None:
        if len(build_id) < 4:
            return None
        rel = os.path.join(".build-id", build_id[:2], build_id[2:])
        for directory in [*self.debug_dirs, *self.search_paths]:
            for candidate in (os.path.join(directory, rel + ".debug"), os.path.join(directory, rel)):
                if os.path.isfile(candidate):
                    return candidate
        return None

    def find_debug_file(self, path: str, build_id: str | None, debuglink: tuple[str, int] | None) -> str | None:
        """A separate debug file for `path`, verified by build-id location or debuglink CRC."""
        if build_id:
            hit = self.find_by_build_id(build_id)
            if hit and os.path.realpath(hit) != os.path.realpath(path):
                return hit
        if debuglink:
            name, crc = debuglink
            directory = os.path.dirname(os.path.abspath(path))
            candidates = [os.path.join(directory, name), os.path.join(directory, ".debug", name)]
            for d in [*self.debug_dirs, *self.search_paths]:
                candidates.append(os.path.join(d, directory.lstrip("/"), name))
                candidates.append(os.path.join(d, name))
            for candidate in candidates:
                if (
                    os.path.isfile(candidate)
                    and os.path.realpath(candidate) != os.path.realpath(path)
                    and (not crc or _crc32(candidate) == crc)
                ):
                    return candidate
        return None


def _search(directory: str, name: str, base: str) -> str | None:
    # A path printed on another machine: try its tail components under the directory, longest first.
    parts = [p for p in name.split("/") if p]
    for i in range(len(parts)):
        candidate = os.path.join(directory, *parts[i:])
        if os.path.isfile(candidate):
            return candidate
    for root, _dirs, files in os.walk(directory):
        if base in files:
            return os.path.join(root, base)
    return None


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc & 0xFFFFFFFF


_ROOT_CACHE: dict[str, str | None] = {}


def source_root(path: str, explicit: str | None = None) -> str | None:
    """The directory holding `.git` above `path` (checked on this machine), or the given --source-root."""
    if explicit:
        root = os.path.abspath(explicit)
        return root if os.path.abspath(path).startswith(root.rstrip("/") + "/") else None
    directory = os.path.dirname(path)
    seen = []
    while directory and directory != "/":
        if directory in _ROOT_CACHE:
            found = _ROOT_CACHE[directory]
            break
        seen.append(directory)
        if os.path.exists(os.path.join(directory, ".git")):
            found = directory
            break
        directory = os.path.dirname(directory)
    else:
        found = None
    for d in seen:
        _ROOT_CACHE[d] = found
    return found


def display_path(path: str | None, explicit_root: str | None = None, inferred_root: str | None = None) -> str | None:
    """`lib/video/frame.c` for a file under the source root: --source-root, else the directory holding
    `.git`, else (a crash from another machine) the root inferred from the project's own source files."""
    if not path or not os.path.isabs(path):
        return path
    norm = os.path.normpath(path)
    root = source_root(norm, explicit_root)
    if root is None and explicit_root is None and inferred_root and norm.startswith(inferred_root.rstrip("/") + "/"):
        root = inferred_root
    if root:
        return os.path.relpath(norm, root)
    return norm


def infer_source_root(files: list[str]) -> str | None:
    """The deepest directory holding every project source file (system headers excluded), if meaningful.

    Built on another machine, the tree is absent here; the common directory of `lib/…` and `src/…`
    is the checkout root. One directory level is not enough evidence (it would collapse to basenames).
    """
    own = [os.path.normpath(f) for f in files if os.path.isabs(f) and not f.startswith(("/usr/", "/lib/", "/opt/"))]
    if len(own) < 2:
        return None
    root = os.path.commonpath(own)
    if root in ("/", "") or all(os.path.dirname(f) == root for f in own):
        return None  # every file in one directory: stripping it would leave bare basenames
    return root
