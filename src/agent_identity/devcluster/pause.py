"""The node's sandbox ("pause") image, built here without a registry or a Docker engine.

A ten-line static Go program (hack/pause/main.go) is the whole image: buildah makes
an image from scratch holding only that binary and exports it as an OCI archive in
`${XDG_CACHE_HOME:-~/.cache}/agent-identity/images/`, from where `devcluster up`
imports it into the node's containerd (with every other image archive there).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

from agent_identity.devcluster import apt
from agent_identity.devcluster.build import (
    BuildError,
    _go,
    _Progress,
    _run,
    build_lock,
    cache_root,
    hack_dir,
)

PAUSE_VERSION = "1.0"
PAUSE_IMAGE = f"localhost/agent-identity-pause:{PAUSE_VERSION}"


def images_dir() -> Path:
    """Where image OCI archives live (the shipping build writes the project image here too)."""
    return cache_root() / "images"


def pause_archive() -> Path:
    return images_dir() / f"agent-identity-pause-{PAUSE_VERSION}.tar"


def is_oci_archive(path: Path) -> bool:
    """True for a tar holding an OCI image layout (not, e.g., a rootfs tarball)."""
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.lstrip("./") == "oci-layout":
                    return True
    except (OSError, tarfile.TarError):
        return False
    return False


def image_archives(directory: Path | None = None) -> list[Path]:
    """Every OCI image archive in the images cache, the pause image first."""
    where = directory or images_dir()
    found = sorted(p for p in where.glob("*.tar") if p.is_file() and is_oci_archive(p))
    return sorted(found, key=lambda p: p.name != pause_archive().name)


def _buildah(args: list[str], step: str, progress: _Progress, log: Path) -> str:
    return _run(["buildah", *args], log.parent, log, progress, step).stdout.strip()


def ensure_pause_image(progress: bool = True) -> Path:
    """The pause image's OCI archive, built first when it is not cached (~10 s)."""
    archive = pause_archive()
    if is_oci_archive(archive):
        return archive
    prog = _Progress(progress)
    try:
        apt.ensure_tools({"buildah": "buildah"}, prog.say, "the node's pause image")
    except apt.PackageError as exc:
        raise BuildError(str(exc)) from exc
    with build_lock():
        if is_oci_archive(archive):
            return archive
        work = cache_root() / "build" / f"pause-{PAUSE_VERSION}"
        work.mkdir(parents=True, exist_ok=True)
        log = work / "build.log"
        for name in ("main.go", "go.mod"):
            shutil.copy2(hack_dir() / "pause" / name, work / name)
        _run(
            [_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(work / "pause"), "."],
            work,
            log,
            prog,
            "compile pause (static)",
        )
        ctr = _buildah(["from", "scratch"], "buildah from scratch", prog, log)
        try:
            _buildah(["copy", ctr, str(work / "pause"), "/pause"], "copy /pause", prog, log)
            _buildah(
                ["config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr],
                "configure the entrypoint",
                prog,
                log,
            )
            _buildah(["commit", "--rm", ctr, PAUSE_IMAGE], f"commit {PAUSE_IMAGE}", prog, log)
        except BuildError:
            subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
            raise
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(".tar.partial")
        partial.unlink(missing_ok=True)
        _buildah(
            ["push", PAUSE_IMAGE, f"oci-archive:{partial}:{PAUSE_IMAGE}"],
            f"export {archive}",
            prog,
            log,
        )
        partial.replace(archive)
        prog.say(f"pause image: {archive}")
    return archive
