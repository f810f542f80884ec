"""Recover a module's load bias from raw return addresses, with no maps and no module offsets.

A load bias is page-aligned, so an address keeps its low 12 bits as a module vaddr. For each
address, every vaddr in the executable segments with those low bits is a candidate; a candidate
counts when the bytes before it decode as an x86-64 call (E8 rel32 with an in-module target, or
FF /2 in any of its ModRM lengths). The bias most addresses agree on wins; how many agree, and
how close the runner-up comes, is the confidence.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

PAGE = 0x1000


@dataclass(frozen=True)
class BiasGuess:
    bias: int
    hits: int
    total: int
    runner_up: int  # hits of the second-best bias
    confidence: str  # high | medium | low
    fitting: frozenset[int]  # addresses that land after a call under this bias
    alternatives: tuple[tuple[int, int], ...] = ()  # (bias, hits) of the best few candidates, best first

    @property
    def ambiguous(self) -> bool:
        return self.runner_up >= self.hits


class CallSiteMap:
    """For each executable byte of a module: does the instruction before it look like a call?"""

    def __init__(self, segments: list[tuple[int, bytes]]) -> None:
        import numpy as np  # only here and below: a run with maps never needs it

        self.segments = []
        lo_all = min((v for v, _ in segments), default=0)
        hi_all = max((v + len(b) for v, b in segments), default=0)
        for vaddr, raw in segments:
            self.segments.append((vaddr, _after_call(np.frombuffer(raw, dtype=np.uint8), vaddr, lo_all, hi_all)))

    def candidates(self, address: int) -> np.ndarray:
        """Module vaddrs with the low 12 bits of `address` that sit right after a call."""
        import numpy as np

        low = address & (PAGE - 1)
        out = []
        for vaddr, mask in self.segments:
            first = vaddr + ((low - vaddr) % PAGE)
            idx = np.arange(first - vaddr, len(mask), PAGE)
            hits = idx[mask[idx]] if len(idx) else idx
            out.append(hits.astype(np.int64) + vaddr)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def is_after_call(self, vaddr: int) -> bool:
        for seg_vaddr, mask in self.segments:
            if seg_vaddr <= vaddr < seg_vaddr + len(mask):
                return bool(mask[vaddr - seg_vaddr])
        return False


def _after_call(t: np.ndarray, vaddr: int, lo_all: int, hi_all: int) -> np.ndarray:
    import numpy as np

    n = len(t)
    mask = np.zeros(n, dtype=bool)
    if n < 2:
        return mask
    # E8 rel32: 5 bytes; the target must land inside the module's executable range.
    if n > 5:
        pos = np.nonzero(t[: n - 5] == 0xE8)[0]
        ret = pos + 5
        rel = (
            t[pos + 1].astype(np.int64)
            | (t[pos + 2].astype(np.int64) << 8)
            | (t[pos + 3].astype(np.int64) << 16)
            | (t[pos + 4].astype(np.int64) << 24)
        )
        rel = np.where(rel >= 1 << 31, rel - (1 << 32), rel)
        target = ret + vaddr + rel
        ok = (target >= lo_all) & (target < hi_all)
        mask[ret[ok]] = True
    # FF /2 (call r/m): ModRM reg field 2; the length depends on mod, r/m and SIB.
    ff = np.nonzero(t[: n - 1] == 0xFF)[0]
    modrm = t[ff + 1]
    reg2 = ((modrm >> 3) & 7) == 2
    ff, modrm = ff[reg2], modrm[reg2]
    mod = modrm >> 6
    rm = modrm & 7
    length = np.full(len(ff), 2, dtype=np.int64)
    sib_at = ff + 2
    has_sib = (mod != 3) & (rm == 4)
    sib = np.zeros(len(ff), dtype=np.uint8)
    inside = sib_at < n
    sib[inside] = t[sib_at[inside]]
    length += has_sib.astype(np.int64)
    length += np.where(mod == 1, 1, 0) + np.where(mod == 2, 4, 0)
    length += np.where((mod == 0) & (rm == 5), 4, 0)  # RIP-relative disp32
    length += np.where((mod == 0) & has_sib & ((sib & 7) == 5), 4, 0)  # SIB with no base: disp32
    ret = ff + length
    ok = ret < n
    mask[ret[ok]] = True
    return mask


def recover_bias(sites: CallSiteMap, addresses: list[int]) -> BiasGuess | None:
    """The page-aligned bias under which most `addresses` land right after a call instruction."""
    import numpy as np

    addresses = sorted(set(addresses))
    if not addresses:
        return None
    votes: Counter[int] = Counter()
    for addr in addresses:
        cands = sites.candidates(addr)
        biases = np.unique(addr - cands)
        votes.update(int(b) for b in biases if b >= 0)
    if not votes:
        return None
    ranked = votes.most_common(4)
    bias, hits = ranked[0]
    runner = ranked[1][1] if len(ranked) > 1 else 0
    total = len(addresses)
    fitting = frozenset(a for a in addresses if sites.is_after_call(a - bias))
    if hits == total and total >= 3 and runner <= total // 2:
        confidence = "high"
    elif hits >= 2 and runner < hits:
        confidence = "medium"
    else:
        confidence = "low"
    return BiasGuess(bias, hits, total, runner, confidence, fitting, tuple(ranked))


def with_bias(guess: BiasGuess, sites: CallSiteMap, addresses: list[int], bias: int) -> BiasGuess:
    """The same guess re-centred on another candidate bias (after a tie-break)."""
    hits = dict(guess.alternatives).get(bias, 0)
    others = [h for b, h in guess.alternatives if b != bias]
    fitting = frozenset(a for a in set(addresses) if sites.is_after_call(a - bias))
    return BiasGuess(bias, hits, guess.total, max(others, default=0), guess.confidence, fitting, guess.alternatives)


def direct_call_target(read: callable, ret_vaddr: int) -> int | None:
    """Target of an E8 rel32 call that returns to `ret_vaddr`, if that is how the call was made."""
    raw = read(ret_vaddr - 5, 5)
    if not raw or len(raw) != 5 or raw[0] != 0xE8:
        return None
    return ret_vaddr + int.from_bytes(raw[1:], "little", signed=True)
