"""`make image` for real: buildah builds the Dockerfile on a debootstrapped Debian base.

Deselect with `-m "not image"` (it needs root, apt and buildah, and takes ~2 min cold).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from agent_identity import __version__
from agent_identity.devcluster import image

pytestmark = [
    pytest.mark.image,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah with chroot isolation needs root here"),
]


@pytest.fixture(scope="module")
def built() -> str:
    # Built here unless the archive is current with the sources (the e2e fixture may
    # have built it moments ago); either way it is what `make image` makes of this tree.
    archive, _ = image.ensure_image()
    assert archive == image.archive_path() and image.is_current(image.repo_root())
    assert archive.is_file() and archive.stat().st_size > 10_000_000
    return image.image_ref()


@pytest.fixture
def container(built: str) -> Iterator[str]:
    ctr = subprocess.run(
        ["buildah", "from", built], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield ctr
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)


def _run(ctr: str, *cmd: str, user: str | None = "65532:65532") -> subprocess.CompletedProcess[str]:
    as_user = ["--user", user] if user else []  # None: the image's own USER
    return subprocess.run(
        ["buildah", "run", "--isolation", "chroot", *as_user, ctr, "--", *cmd],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_version_runs_as_nonroot(container: str) -> None:
    proc = _run(container, "agent-identity", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"agent-identity, version {__version__}"
    # Without --user, the image's configured user: numeric and non-root.
    ids = _run(container, "python3", "-c", "import os; print(os.getuid(), os.getgid())", user=None)
    assert ids.stdout.split() == ["65532", "65532"], ids.stderr


def test_image_config(built: str) -> None:
    info = json.loads(
        subprocess.run(
            ["buildah", "inspect", "--type", "image", built],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    config = info["OCIv1"]["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["agent-identity"]
    # The operator and admission subcommands are importable in the image (all wheels made it in).
    assert any(e.startswith("PATH=/opt/venv/bin") for e in config["Env"])


def test_every_dependency_imports(container: str) -> None:
    mods = "kopf, kubernetes, pydantic, yaml, prometheus_client, cryptography, aiohttp, cel, rich"
    proc = _run(container, "python3", "-c", f"import {mods}; import agent_identity.cli.main")
    assert proc.returncode == 0, proc.stderr


def test_no_compiler_in_the_image(container: str) -> None:
    # `command -v` prints the path of each name it finds and exits 1 when any is missing;
    # the shell itself must work (a positive control), so the empty answer means something.
    proc = _run(container, "sh", "-c", "command -v sh; command -v gcc cc g++ c++ make; echo done")
    assert proc.returncode == 0, proc.stderr
    found = proc.stdout.split()
    assert found[0].endswith("/sh") and found[-1] == "done", proc.stdout
    assert found[1:-1] == [], f"compilers in the final image: {found[1:-1]}"
