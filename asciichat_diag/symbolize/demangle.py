"""C++ (Itanium) and Rust (legacy and v0) demangling through maintained libraries, never by hand."""

from __future__ import annotations

import re
from functools import lru_cache

_RUST_LEGACY = re.compile(r"^_ZN.*17h[0-9a-f]{16}E(\.|$)")


@lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    """Demangled form of a linkage name; the name itself when it is not mangled or does not decode."""
    if not name or not (name.startswith("_Z") or name.startswith("_R") or name.startswith("__Z")):
        return name
    if name.startswith("_R") or _RUST_LEGACY.match(name):
        try:
            import rust_demangler

            out = rust_demangler.demangle(name)
            if out and out != name:
                return out
        except Exception:  # the library raises its own error types on non-Rust input
            pass
    try:
        import cxxfilt

        return cxxfilt.demangle(name.removeprefix("_") if name.startswith("__Z") else name)
    except Exception:  # cxxfilt.InvalidName and friends: keep the raw name, as llvm-symbolizer does
        return name
