"""The shell scripts people and CI run (make run, the demo, CI's entry point) lint clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("hack/*.sh"), ROOT / ".ci" / "run"])


def _shellcheck() -> str:
    found = Path(sys.executable).with_name("shellcheck")
    return str(found) if found.exists() else (shutil.which("shellcheck") or "shellcheck")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_clean(script: Path) -> None:
    proc = subprocess.run(
        [_shellcheck(), "--severity=style", str(script)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_found() -> None:
    assert {p.name for p in SCRIPTS} >= {"run.sh", "demo.sh", "run"}
