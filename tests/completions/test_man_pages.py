"""Man pages are generated from the click definitions, must not go stale, and must render cleanly."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "docs" / "man"
PAGES = {
    "diag.1", "diag-symbolize.1", "diag-ports.1", "diag-bind.1", "diag-logs.1",
    "asciichat-server.1", "asciichat-client.1",
}  # fmt: skip


def _generator():
    spec = importlib.util.spec_from_file_location("man_generate", MAN / "generate.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _text(page: str, width: int = 80) -> str:
    """The page as man would show it, as plain text (no overstrike, ASCII hyphens, no hyphenation breaks)."""
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff is not installed (.ci/run installs it)")
    cmd = [groff, "-man", "-Tutf8", "-P-cbou", f"-rLL={width}n", "-rHY=0", str(MAN / page)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return out.replace("\u2010", "-").replace("\u2212", "-")


def test_committed_man_pages_are_current(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)
    assert {p.name for p in written} == PAGES
    stale = [p.name for p in written if not (MAN / p.name).exists() or (MAN / p.name).read_text() != p.read_text()]
    assert not stale, f"run `python docs/man/generate.py`: stale {stale}"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_renders_without_warnings(page: str) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff is not installed (.ci/run installs it)")
    path = MAN / page
    result = subprocess.run([groff, "-man", "-ww", "-z", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = _text(page)
    assert "NAME" in text and "SYNOPSIS" in text and "OPTIONS" in text
    assert "--help" in text


def test_examples_stay_preformatted_and_options_carry_defaults() -> None:
    text = _text("diag-ports.1", 120)
    lines = [ln.strip() for ln in text.splitlines()]
    # each example keeps its own line (a \b block), not filled into one paragraph
    assert any(ln.startswith("diag ports 27224 --acip") for ln in lines)
    assert any(ln.startswith("diag ports 27224 --watch") for ln in lines)
    assert "[default: 1.0; 0.01<=x<=60]" in text
    diag = _text("diag.1", 200)
    for sub in ("symbolize", "ports", "bind", "logs"):
        assert f"(see diag-{sub}(1))" in diag
