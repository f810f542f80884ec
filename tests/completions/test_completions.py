"""Shell completions are generated from the click definitions and must not go stale."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPLETIONS = ROOT / "completions"


def _generator():
    spec = importlib.util.spec_from_file_location("completions_generate", COMPLETIONS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_committed_completions_are_current(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)
    assert len(written) == 9
    stale = [p.name for p in written if (COMPLETIONS / p.name).read_text() != p.read_text()]
    assert not stale, f"run `python completions/generate.py`: stale {stale}"


@pytest.mark.parametrize(("shell", "suffix"), [("bash", ".bash"), ("zsh", ""), ("fish", ".fish")])
def test_scripts_parse(shell: str, suffix: str) -> None:
    exe = shutil.which(shell)
    if exe is None:
        pytest.fail(f"{shell} is not installed (.ci/run installs it)")
    for prog in ("diag", "asciichat-server", "asciichat-client"):
        name = f"_{prog}" if shell == "zsh" else f"{prog}{suffix}"
        result = subprocess.run([exe, "-n", str(COMPLETIONS / name)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def _bash_complete(words: list[str]) -> list[str]:
    """Run the generated bash function for a command line, as bash would on <TAB>."""
    script = (
        f"source {COMPLETIONS / 'diag.bash'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_diag_complete\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_bash_completes_subcommands_options_and_choices() -> None:
    assert {"symbolize", "ports", "bind", "logs"} <= set(_bash_complete(["diag", ""]))
    assert "--json" in _bash_complete(["diag", "ports", "--j"])
    assert _bash_complete(["diag", "logs", "--color", ""]) == ["auto", "always", "never"]
    # an option's value is skipped when finding the subcommand path
    assert "--json" in _bash_complete(["diag", "--debug", "ports", "--"])


def test_generator_runs_as_a_script(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(COMPLETIONS / "generate.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "diag.fish").exists()
