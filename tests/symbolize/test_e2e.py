"""End to end: real programs print real backtraces; diag must match llvm-symbolizer at the true vaddrs."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from click.testing import CliRunner

from asciichat_diag.cli import main
from asciichat_diag.symbolize.build import build_elf_index
from asciichat_diag.symbolize.elfio import parse_elf
from asciichat_diag.symbolize.parse import parse_text

BUILDS = ["gnu", "lld"]


def run(args: list[str], stdin: str | None = None):
    result = CliRunner().invoke(main, ["symbolize", "--color", "never", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def run_json(args: list[str], stdin: str | None = None) -> tuple[int, dict]:
    code, out, err = run([*args, "--json"], stdin)
    assert code in (0, 1), err
    return code, json.loads(out)


def write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def chain_of(frame: dict) -> list[tuple]:
    chain = [*frame["inlined"], {k: frame[k] for k in ("function", "file", "line", "column")}]
    return [(c["function"] or "", c["file"] or "", c["line"] or 0, c["column"] or 0) for c in chain]


def rel(root, path: str) -> str:
    return os.path.relpath(path, root) if path else ""


def expected(build, frames: list[dict], llvm_symbolize) -> list[list[tuple]]:
    """llvm-symbolizer's answers for the vaddrs diag looked up, with paths made relative like diag's."""
    out = []
    for f in frames:
        path = build.lib if f["module"] == "libasciichat.so" else build.exe
        chain = llvm_symbolize(path, [int(f["lookup_address"], 16)])[0]
        out.append([(fn, rel(build.root, file) if file.startswith(str(build.root)) else file, ln, col)
                    for fn, file, ln, col in chain])  # fmt: skip
    return out


@pytest.mark.parametrize("name", BUILDS)
def test_trace_with_maps_matches_llvm_symbolizer(builds, name, tmp_path, lib_src_lines, empty_debug_dir, llvm):
    b = builds[name]
    _, data = run_json([write(tmp_path, "t.txt", b.outputs["trace"]), "--debug-dir", str(empty_debug_dir)])
    frames = data["frames"]
    ours = [f for f in frames if f["module"] in ("libasciichat.so", "ascii-chat")]
    assert [f["function"] for f in ours] == [
        "frame_encode",
        "layer1",
        "layer2",
        "layer3",
        "dup_symbol",
        "main",
        "_start",
    ]
    assert [chain_of(f) for f in ours] == expected(b, ours, llvm)
    # Frame 0 is a return address inside the always_inline helper: the -1 rule keeps the inline frame.
    top = ours[0]
    assert top["inlined"][0]["function"] == "helper_inl"
    assert top["inlined"][0]["file"] == "lib/lib.c"
    assert top["inlined"][0]["line"] == lib_src_lines["HELPER_LINE"]
    assert top["file"] == "lib/lib.c" and top["line"] == lib_src_lines["ENCODE_LINE"]
    assert top["source"] == "dwarf"
    # Return addresses are looked up at address - 1.
    assert all(int(f["lookup_address"], 16) == int(f["module_offset"], 16) - 1 for f in ours)


def test_lld_layout_vaddr_is_not_file_offset(builds, tmp_path, empty_debug_dir, llvm):
    """Under lld the executable PT_LOAD has p_vaddr != p_offset; the file offset names the wrong code."""
    b = builds["lld"]
    img = parse_elf(str(b.lib))
    text_seg = img.exec_segments()[0]
    assert text_seg.vaddr != text_seg.offset
    _, data = run_json([write(tmp_path, "t.txt", b.outputs["trace"]), "--debug-dir", str(empty_debug_dir)])
    lib_frames = [f for f in data["frames"] if f["module"] == "libasciichat.so"]
    maps = parse_text(b.outputs["trace"]).maps
    for f in lib_frames:
        addr = int(f["address"], 16)
        entry = next(m for m in maps if m.start <= addr < m.end)
        file_offset = addr - entry.start + entry.offset
        assert int(f["module_offset"], 16) == file_offset - text_seg.offset + text_seg.vaddr
        # What ascii-chat's symbols.c would have asked llvm-symbolizer (the file offset) is a different function.
        wrong = llvm(b.lib, [file_offset - 1])[0][-1][0]
        assert wrong != f["function"]


@pytest.mark.parametrize("name", BUILDS)
def test_text_output_format_and_conflict(builds, name, tmp_path, empty_debug_dir):
    b = builds[name]
    _, out, _ = run([write(tmp_path, "t.txt", b.outputs["trace"]), "--debug-dir", str(empty_debug_dir)])
    lines = out.splitlines()
    assert "  [0] [libasciichat.so] frame_encode() (lib/lib.c:" in out
    assert any(re.match(r"^      \[inlined\] helper_inl\(\) \(lib/lib\.c:\d+\)$", x) for x in lines)
    # dup_symbol is defined in both images: the exe's frame names both images and both answers.
    dup = [x for x in lines if "dup_symbol()" in x and x.lstrip().startswith("[")]
    assert len(dup) == 1
    for x in dup:
        assert "[CONFLICT!]" in x
        assert "[ascii-chat] dup_symbol() (src/main.c:" in x
        assert "[libasciichat.so] dup_symbol() (lib/lib.c:" in x
    # No conflict for names defined once.
    assert not [x for x in lines if "[CONFLICT!]" in x and "dup_symbol" not in x]
    # The maps lines pass through unchanged.
    for raw in b.outputs["trace"].splitlines():
        if " r-xp " in raw:
            assert raw in lines


def test_conflict_json_and_colour(builds, tmp_path, empty_debug_dir):
    b = builds["lld"]
    path = write(tmp_path, "t.txt", b.outputs["trace"])
    _, data = run_json([path, "--debug-dir", str(empty_debug_dir)])
    dups = [f for f in data["frames"] if f["function"] == "dup_symbol"]
    assert [f["module"] for f in dups] == ["ascii-chat"]
    for f in dups:
        assert {c["module"] for c in f["conflict"]} == {"ascii-chat", "libasciichat.so"}
        files = {c["module"]: c["file"] for c in f["conflict"]}
        assert files == {"ascii-chat": "src/main.c", "libasciichat.so": "lib/lib.c"}
    assert all(f["conflict"] is None for f in data["frames"] if f["function"] != "dup_symbol")
    result = CliRunner().invoke(main, ["symbolize", path, "--color", "always", "--debug-dir", str(empty_debug_dir)])
    red = [x for x in result.stdout.splitlines() if "CONFLICT" in x]
    assert red and all("\x1b[1;31m" in x or "\x1b[31;1m" in x for x in red)


@pytest.mark.parametrize("name", BUILDS)
def test_crash_block_trampoline_and_faulting_pc(builds, name, tmp_path, lib_src_lines, empty_debug_dir):
    b = builds[name]
    _, data = run_json([write(tmp_path, "c.txt", b.outputs["crash"]), "--debug-dir", str(empty_debug_dir)])
    frames = data["frames"]
    names = [f["function"] for f in frames]
    k = names.index("crash_now")
    # The frame before crash_now is the signal trampoline in libc; crash_now is the faulting PC: no -1.
    assert frames[k - 1]["module"].startswith("libc.so")
    assert frames[k]["lookup_address"] == frames[k]["module_offset"]
    assert frames[k]["line"] == lib_src_lines["CRASH_LINE"]
    assert frames[k + 1]["function"] == "main"
    assert int(frames[k + 1]["lookup_address"], 16) == int(frames[k + 1]["module_offset"], 16) - 1


@pytest.mark.parametrize("name", BUILDS)
def test_glibc_backtrace_symbols(builds, name, tmp_path, empty_debug_dir):
    b = builds[name]
    text = b.outputs["symbols"]
    assert "libasciichat.so(" in text  # glibc's own format, e.g. `.../libasciichat.so(frame_encode+0x1b) [0x…]`
    _code, data = run_json([write(tmp_path, "s.txt", text), "--debug-dir", str(empty_debug_dir)])
    fn = [f["function"] for f in data["frames"] if f["module"] in ("libasciichat.so", "ascii-chat")]
    assert fn == ["frame_encode", "layer1", "layer2", "layer3", "dup_symbol", "main", "_start"]
    # Without the maps lines, module+offset alone is enough.
    no_maps = "\n".join(x for x in text.splitlines() if not re.match(r"^[0-9a-f]+-[0-9a-f]+ ", x))
    _, data2 = run_json([write(tmp_path, "s2.txt", no_maps), "--debug-dir", str(empty_debug_dir)])
    assert [chain_of(f) for f in data2["frames"]] == [chain_of(f) for f in data["frames"]]


@pytest.mark.parametrize("name", BUILDS)
def test_maps_option_and_module_names_without_maps(builds, name, tmp_path, empty_debug_dir):
    b = builds[name]
    trace = b.outputs["trace"]
    frames_only = "\n".join(x for x in trace.splitlines() if not re.match(r"^[0-9a-f]+-[0-9a-f]+ ", x))
    maps_only = "\n".join(x for x in trace.splitlines() if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", x))
    ref = run_json([write(tmp_path, "t.txt", trace), "--debug-dir", str(empty_debug_dir)])[1]["frames"]
    via_opt = run_json([write(tmp_path, "f.txt", frames_only), "--maps", write(tmp_path, "m.txt", maps_only),
                        "--debug-dir", str(empty_debug_dir)])[1]["frames"]  # fmt: skip
    assert [chain_of(f) for f in via_opt] == [chain_of(f) for f in ref]


@pytest.mark.parametrize("name", BUILDS)
def test_bias_recovery_without_maps(builds, name, tmp_path, empty_debug_dir):
    """Frames named by module but no maps: the load bias comes from the return addresses themselves."""
    b = builds[name]
    trace = b.outputs["trace"]
    ref = run_json([write(tmp_path, "t.txt", trace), "--debug-dir", str(empty_debug_dir)])[1]["frames"]
    named = []
    for f, line in zip(ref, [x for x in trace.splitlines() if re.match(r"^\s+\[\d+\] 0x", x)]):
        if f["module"] in ("libasciichat.so", "ascii-chat"):
            named.append(line.replace("] 0x", f"] [{f['module']}] 0x"))
    _, data = run_json([write(tmp_path, "n.txt", "\n".join(named)), "--exe", str(b.exe), "--lib", str(b.lib),
                           "--debug-dir", str(empty_debug_dir)])  # fmt: skip
    ours = [f for f in ref if f["module"] in ("libasciichat.so", "ascii-chat")]
    assert [chain_of(f) for f in data["frames"]] == [chain_of(f) for f in ours]
    mods = {m["name"]: m for m in data["modules"]}
    lib_bias = parse_maps_bias(trace, "libasciichat.so")
    assert mods["libasciichat.so"]["bias_source"] == "recovered"
    assert mods["libasciichat.so"]["bias"] == lib_bias
    assert mods["libasciichat.so"]["confidence"] == "high"
    # The second witness: a direct call made by an outer frame lands in the inner frame's function
    # (main -> dup_symbol in the executable; the library's calls go through its PLT and are not counted).
    m = re.search(r"(\d+)/(\d+) direct calls land in the next-inner frame's function", mods["ascii-chat"]["detail"])
    assert m and m[1] == m[2] and int(m[2]) >= 1
    assert any("recovered load bias" in n and "libasciichat.so" in n for n in data["notes"])
    # Bare addresses, no module names: each address is attributed to the image whose bias fits it.
    bare = "\n".join(x.split("] ", 1)[0] + "] " + x.rsplit(" ", 1)[1] for x in named)
    _, data = run_json([write(tmp_path, "b.txt", bare), "--exe", str(b.exe), "--lib", str(b.lib),
                           "--debug-dir", str(empty_debug_dir)])  # fmt: skip
    assert [f["module"] for f in data["frames"]] == [f["module"] for f in ours]
    assert [chain_of(f) for f in data["frames"]] == [chain_of(f) for f in ours]


def parse_maps_bias(trace: str, name: str) -> int:
    maps = [m for m in parse_text(trace).maps if m.path.endswith("/" + name)]
    return min(m.start for m in maps if m.offset == 0)


def test_live_pid(builds, tmp_path, empty_debug_dir):
    b = builds["lld"]
    proc = subprocess.Popen([str(b.exe), "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            lines.append(line)
            if not line or "[vsyscall]" in line:
                break
        frames = "".join(x for x in lines if re.match(r"^\s+\[\d+\] 0x", x))
        _, data = run_json([write(tmp_path, "p.txt", frames), "--pid", str(proc.pid),
                               "--debug-dir", str(empty_debug_dir)])  # fmt: skip
        assert [f["function"] for f in data["frames"]][:4] == ["frame_encode", "layer1", "layer2", "layer3"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_round_trip_of_resolved_output(builds, tmp_path, empty_debug_dir):
    """Our own output, fed back in, parses to the same frames and re-checks against the binaries."""
    b = builds["lld"]
    first = run([write(tmp_path, "t.txt", b.outputs["trace"]), "--debug-dir", str(empty_debug_dir)])[1]
    _, data = run_json([write(tmp_path, "again.txt", first), "--exe", str(b.exe), "--lib", str(b.lib),
                           "--debug-dir", str(empty_debug_dir)])  # fmt: skip
    ours = [f for f in data["frames"] if f["module"] in ("libasciichat.so", "ascii-chat")]
    assert [f["function"] for f in ours][:4] == ["frame_encode", "layer1", "layer2", "layer3"]
    assert all(f["source"] == "input" for f in ours)
    assert not [f for f in ours if (f["note"] or "").startswith("re-check failed")]
    # Printing it again gives the same text for our frames (inline sub-lines regenerated, not duplicated).
    second = run([write(tmp_path, "again2.txt", first), "--exe", str(b.exe), "--lib", str(b.lib),
                  "--debug-dir", str(empty_debug_dir)])[1]  # fmt: skip
    pick = [x for x in first.splitlines() if "lib/lib.c" in x or "src/main.c" in x]
    pick2 = [x for x in second.splitlines() if "lib/lib.c" in x or "src/main.c" in x]
    assert pick == pick2


def test_recheck_flags_a_wrong_resolved_frame(builds, tmp_path, empty_debug_dir):
    b = builds["lld"]
    text = (
        "Backtrace\n  [0] [libasciichat.so] frame_encode() (lib/lib.c:999)\n"
        "  [1] [libasciichat.so] nope_fn() (lib/lib.c:3)\n"
    )
    code, data = run_json([write(tmp_path, "w.txt", text), "--lib", str(b.lib), "--debug-dir", str(empty_debug_dir)])
    assert code == 1
    notes = [f["note"] for f in data["frames"]]
    assert "lib/lib.c:999 is not in frame_encode()" in notes[0]
    assert "nope_fn() is not defined in libasciichat.so" in notes[1]


def test_no_cache_gives_identical_output(builds, tmp_path, empty_debug_dir, monkeypatch):
    b = builds["gnu"]
    path = write(tmp_path, "t.txt", b.outputs["trace"])
    cache = tmp_path / "cache"
    monkeypatch.setenv("ASCIICHAT_DIAG_CACHE_DIR", str(cache))
    cold = run([path, "--debug-dir", str(empty_debug_dir)])
    assert list(cache.glob("*.idx")), "the cold run fills the cache"
    warm = run([path, "--debug-dir", str(empty_debug_dir)])
    uncached = run([path, "--no-cache", "--debug-dir", str(empty_debug_dir)])
    assert cold[:2] == warm[:2] == uncached[:2]
    # A damaged cache file is rebuilt, never trusted.
    for f in cache.glob("*.idx"):
        f.write_bytes(f.read_bytes()[:40])
    assert run([path, "--debug-dir", str(empty_debug_dir)])[:2] == cold[:2]


def test_exit_one_when_frames_unresolved(tmp_path):
    code, out, _ = run([write(tmp_path, "u.txt", "Backtrace\n  [0] 0x7f3a2b1c4d5e\n  [1] [NULL]\n")])
    assert code == 1
    assert "  [0] 0x7f3a2b1c4d5e" in out


def test_sanitizer_report_real(tmp_path, empty_debug_dir):
    """A real ASan report with symbolize=0: `(module+0xoff) (BuildId: …)` frames."""
    src = tmp_path / "asan.c"
    src.write_text("__attribute__((noinline)) int bad(int *p) { return p[1]; }\nint main(void) { return bad(0); }\n")
    exe = tmp_path / "asan"
    r = subprocess.run(["clang", "-g", "-O0", "-fsanitize=address", str(src), "-o", str(exe)], capture_output=True)
    if r.returncode:
        pytest.skip("clang cannot link ASan here")
    rep = subprocess.run([str(exe)], capture_output=True, text=True, env={**os.environ, "ASAN_OPTIONS": "symbolize=0"})
    assert "(BuildId:" in rep.stderr
    _, data = run_json([write(tmp_path, "asan.txt", rep.stderr), "--debug-dir", str(empty_debug_dir)])
    fn = [f["function"] for f in data["frames"]]
    assert fn[:1] == ["bad"] and "main" in fn
    bad = data["frames"][0]
    # Sanitizer frames are already call-site PCs: looked up as printed.
    assert bad["lookup_address"] == bad["module_offset"]
    assert bad["line"] == 1
    assert bad["file"].endswith("asan.c")


def test_ambiguous_owner_is_a_conflict(builds, tmp_path, empty_debug_dir):
    """Bare addresses with two images that both fit (two copies of one library): [CONFLICT!], both named."""
    b = builds["lld"]
    twin = tmp_path / "libtwin.so"
    twin.write_bytes(b.lib.read_bytes())
    trace = b.outputs["trace"]
    ref = run_json([write(tmp_path, "t.txt", trace), "--debug-dir", str(empty_debug_dir)])[1]["frames"]
    lib_lines = [
        line.split("] ", 1)[0] + "] " + f["address"]
        for f, line in zip(ref, [x for x in trace.splitlines() if re.match(r"^\s+\[\d+\] 0x", x)])
        if f["module"] == "libasciichat.so"
    ]
    code, data = run_json([write(tmp_path, "a.txt", "\n".join(lib_lines)), "--lib", str(b.lib), "--lib", str(twin),
                           "--debug-dir", str(empty_debug_dir)])  # fmt: skip
    assert code == 0
    for f in data["frames"]:
        assert {c["module"] for c in f["conflict"]} == {"libasciichat.so", "libtwin.so"}
        assert len({c["function"] for c in f["conflict"]}) == 1
    out = run([write(tmp_path, "a2.txt", "\n".join(lib_lines)), "--lib", str(b.lib), "--lib", str(twin),
               "--debug-dir", str(empty_debug_dir)])[1]  # fmt: skip
    assert out.count("[CONFLICT!]") == len(lib_lines)
    assert "owning module is ambiguous" in out


def test_build_id_mismatch_is_reported(builds, tmp_path, empty_debug_dir):
    b = builds["lld"]
    real = parse_elf(str(b.lib)).build_id
    assert real
    wrong = "00" * (len(real) // 2)
    off = build_elf_index(parse_elf(str(b.lib)), None).symbol_address("frame_encode") + 2
    good = f"    #0 0x7f0000001234 in x ({b.lib}+{off:#x}) (BuildId: {real})\n"
    bad = f"    #0 0x7f0000001234 in x ({b.lib}+{off:#x}) (BuildId: {wrong})\n"
    code, data = run_json([write(tmp_path, "g.txt", good), "--debug-dir", str(empty_debug_dir)])
    assert code == 0 and data["frames"][0]["source"] in ("dwarf", "symtab")
    code, data = run_json([write(tmp_path, "b.txt", bad), "--debug-dir", str(empty_debug_dir)])
    assert code == 1 and data["frames"][0]["note"].startswith("build-id mismatch")


def test_placeholders_and_signal_frames(tmp_path):
    text = "  [0] [NULL]\n  [1] ???\n#0  f () at a.c:1\n#1  <signal handler called>\n"
    code, out, _ = run([write(tmp_path, "p.txt", text)])
    assert code == 1  # [NULL] and ??? are frames nobody can resolve
    assert "  [0] [NULL]" in out and "  [1] ???" in out and "[1] <signal handler called>" in out
    code, out, _ = run([write(tmp_path, "q.txt", "#0  f () at a.c:1\n#1  <signal handler called>\n")])
    assert code == 0  # a signal frame is not a failure


def test_source_root_option_and_git_detection(builds, tmp_path, empty_debug_dir):
    b = builds["gnu"]
    path = write(tmp_path, "t.txt", b.outputs["trace"])
    _, data = run_json([path, "--debug-dir", str(empty_debug_dir)])
    assert {f["file"] for f in data["frames"] if f["module"] == "libasciichat.so"} == {"lib/lib.c"}
    _, data = run_json([path, "--debug-dir", str(empty_debug_dir), "--source-root", str(b.root / "lib")])
    assert {f["file"] for f in data["frames"] if f["module"] == "libasciichat.so"} == {"lib.c"}
    # Outside the given root a path stays absolute rather than collapsing to a basename.
    main_c = {f["file"] for f in data["frames"] if f["module"] == "ascii-chat" and f["function"] == "main"}
    assert main_c == {str(b.root / "src" / "main.c")}


def _run_with_stderr_pty(args: list[str], env: dict) -> tuple[int, bytes, bytes]:
    import pty
    import sys

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "asciichat_diag.cli", "symbolize", *args],
                            stdout=subprocess.PIPE, stderr=slave, env=env)  # fmt: skip
    os.close(slave)
    out = proc.stdout.read()
    proc.wait(timeout=60)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    return proc.returncode, out, err


def test_progress_bar_only_on_a_terminal_and_only_when_cold(builds, tmp_path, empty_debug_dir):
    b = builds["lld"]
    path = write(tmp_path, "t.txt", b.outputs["trace"])
    env = dict(os.environ, ASCIICHAT_DIAG_CACHE_DIR=str(tmp_path / "cache"))
    args = [path, "--json", "--debug-dir", str(empty_debug_dir)]
    _, out_cold, err_cold = _run_with_stderr_pty(args, env)
    assert b"indexing" in err_cold and b"libasciichat.so" in err_cold
    _, out_warm, err_warm = _run_with_stderr_pty(args, env)
    assert b"indexing" not in err_warm  # the cache answered
    assert out_warm == out_cold
    piped = subprocess.run([__import__("sys").executable, "-m", "asciichat_diag.cli", "symbolize", *args, "--no-cache"],
                           capture_output=True, env=env)  # fmt: skip
    assert piped.stderr == b"" and piped.stdout == out_cold


def test_live_pid_after_the_library_was_deleted(builds, tmp_path, empty_debug_dir):
    """Rebuilt while running: maps says `(deleted)`; --pid reads the old file through /proc/PID/map_files."""
    b = builds["lld"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    exe = run_dir / "ascii-chat"
    lib = run_dir / "libasciichat.so"
    exe.write_bytes(b.exe.read_bytes())
    lib.write_bytes(b.lib.read_bytes())
    exe.chmod(0o755)
    proc = subprocess.Popen([str(exe), "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            lines.append(line)
            if not line or "[vsyscall]" in line:
                break
        lib.unlink()
        with open(f"/proc/{proc.pid}/maps") as fh:
            maps = parse_text(fh.read()).maps
        deleted = [m for m in maps if m.path.endswith("libasciichat.so (deleted)")]
        assert deleted, "the kernel marks the unlinked library as deleted"
        try:
            with open(f"/proc/{proc.pid}/map_files/{deleted[0].start:x}-{deleted[0].end:x}", "rb") as fh:
                fh.read(4)
        except OSError:
            pytest.skip("/proc/PID/map_files cannot be opened here (needs CAP_SYS_ADMIN in some containers)")
        frames = "".join(x for x in lines if re.match(r"^\s+\[\d+\] 0x", x))
        _, data = run_json([write(tmp_path, "p.txt", frames), "--pid", str(proc.pid), "--no-cache",
                               "--debug-dir", str(empty_debug_dir)])  # fmt: skip
        top = data["frames"][0]
        assert top["module"] == "libasciichat.so" and top["function"] == "frame_encode"
        assert top["inlined"][0]["function"] == "helper_inl"
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_crash_from_another_machine_with_search_path(builds, tmp_path, empty_debug_dir):
    """Maps paths from a machine we do not have: binaries come from --search-path (by path tail)."""
    b = builds["lld"]
    elsewhere = "/home/someone/ascii-chat/build"
    text = b.outputs["trace"].replace(str(b.exe.parent), elsewhere)
    assert elsewhere + "/libasciichat.so" in text
    copy = tmp_path / "artifacts" / "build"
    copy.mkdir(parents=True)
    for src in (b.exe, b.lib):
        (copy / src.name).write_bytes(src.read_bytes())
    ref = run_json([write(tmp_path, "t0.txt", b.outputs["trace"]), "--debug-dir", str(empty_debug_dir)])[1]
    _, data = run_json([write(tmp_path, "t.txt", text), "--search-path", str(tmp_path / "artifacts"),
                           "--debug-dir", str(empty_debug_dir)])  # fmt: skip
    ours = [f for f in data["frames"] if f["module"] in ("libasciichat.so", "ascii-chat")]
    assert [f["function"] for f in ours] == [f["function"] for f in ref["frames"] if f["module"] in
                                             ("libasciichat.so", "ascii-chat")]  # fmt: skip
    assert {m["path"] for m in data["modules"] if m["name"] == "libasciichat.so"} == {str(copy / "libasciichat.so")}
    # Without it those frames cannot be resolved, and the exit status says so.
    code, data = run_json([write(tmp_path, "t2.txt", text), "--debug-dir", str(empty_debug_dir)])
    assert code == 1
    assert all(f["source"] is None for f in data["frames"] if f["module"] == "libasciichat.so")


def test_panic_pc_records_keep_their_text(builds, tmp_path, empty_debug_dir):
    b = builds["lld"]
    trace = b.outputs["trace"]
    first = next(x for x in trace.splitlines() if re.match(r"^\s+\[0\] 0x", x)).split()[-1]
    maps = "\n".join(x for x in trace.splitlines() if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", x))
    record = f"pid=1 tid=2 seq=3 ts=2026-02-20T14:03:27.481920000Z file=lib/lib.c line=11 func=f snippet=pc={first}"
    _, out, _ = run([write(tmp_path, "p.txt", record + "\n" + maps), "--debug-dir", str(empty_debug_dir)])
    line = out.splitlines()[0]
    assert line.startswith(record + "  => [libasciichat.so] frame_encode() (lib/lib.c:")


def test_no_adjust_looks_up_addresses_as_printed(builds, tmp_path, empty_debug_dir):
    b = builds["lld"]
    path = write(tmp_path, "t.txt", b.outputs["trace"])
    _, data = run_json([path, "--no-adjust", "--debug-dir", str(empty_debug_dir)])
    placed = [f for f in data["frames"] if f["lookup_address"]]
    assert placed and all(f["lookup_address"] == f["module_offset"] for f in placed)


def test_source_root_inferred_without_git(tmp_path, empty_debug_dir):
    """No .git on this machine (a crash from elsewhere): the root is the project files' common directory."""
    from asciichat_diag.symbolize.locate import infer_source_root

    assert infer_source_root(["/r/lib/a.c", "/r/src/b.c", "/usr/include/stdio.h"]) == "/r"
    assert infer_source_root(["/r/lib/a.c", "/r/lib/b.c"]) is None  # would collapse to basenames
    root = tmp_path / "checkout"
    for d in ("lib/video", "src/server", "build"):
        (root / d).mkdir(parents=True)
    (root / "lib/video/frame.c").write_text("int frame_encode(int x) { return x * 3; }\n")
    (root / "src/server/main.c").write_text(
        "int frame_encode(int);\nint main(int c, char **v) { (void)v; return frame_encode(c); }\n"
    )
    subprocess.run(["clang", "-g", "-O0", "-fPIC", "-shared", "-fuse-ld=lld", "lib/video/frame.c", "-o",
                    "build/libasciichat.so"], cwd=root, check=True)  # fmt: skip
    subprocess.run(["clang", "-g", "-O0", "-fuse-ld=lld", "src/server/main.c", "-Lbuild", "-lasciichat", "-o",
                    "build/ascii-chat"], cwd=root, check=True)  # fmt: skip
    lib = parse_elf(str(root / "build/libasciichat.so"))
    exe = parse_elf(str(root / "build/ascii-chat"))
    assert lib.build_id and exe.build_id
    lib_off = build_elf_index(lib, None).symbol_address("frame_encode") + 1
    exe_off = build_elf_index(exe, None).symbol_address("main") + 1
    text = (f"    #0 0x1 ({root}/build/libasciichat.so+{lib_off:#x})\n"
            f"    #1 0x2 ({root}/build/ascii-chat+{exe_off:#x})\n")  # fmt: skip
    _, data = run_json([write(tmp_path, "t.txt", text), "--debug-dir", str(empty_debug_dir)])
    assert [f["file"] for f in data["frames"]] == ["lib/video/frame.c", "src/server/main.c"]
