"""Build the project image without a Docker engine: `make image`.

No registry is reachable from these machines and no Docker engine runs, so:

1. the project and its dependencies become wheels on the host
   (`pip wheel --wheel-dir build/wheels .`; the image build then needs no network);
2. the base image is a Debian bookworm rootfs made by `debootstrap --variant=minbase`
   (Debian mirrors are reachable), imported once as `localhost/agent-identity-base:bookworm`
   and cached as a tarball under `~/.cache/agent-identity/images/`;
3. `buildah bud --isolation chroot` builds the top-level Dockerfile with
   `--build-arg BASE_IMAGE=<that base>` (buildah's default isolation fails here on
   the cgroup setup);
4. the result, `localhost/agent-identity:<version>`, stays in buildah's local storage
   and is exported as an OCI archive `images/agent-identity-<version>.tar` in the cache.

buildah and debootstrap are installed with apt-get when missing. Progress goes to
stderr; stdout carries only the archive path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent_identity import __version__
from agent_identity.devcluster import apt
from agent_identity.devcluster.build import cache_root

IMAGE_NAME = "localhost/agent-identity"
BASE_IMAGE = "localhost/agent-identity-base:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# python3-venv pulls the full python3.11 stdlib (ssl, asyncio) and ensurepip's wheels.
DEBOOTSTRAP_INCLUDE = ("python3-minimal", "python3-venv")
# Files a running Python service never reads: dropped from the base to keep it small.
BASE_PRUNE = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
APT_PACKAGES = {"buildah": "buildah", "debootstrap": "debootstrap"}
NONROOT_UID = 65532


class ImageError(RuntimeError):
    """A step of the image build failed; the message says which and why."""


def images_dir() -> Path:
    return cache_root() / "images"


def image_ref(version: str = __version__) -> str:
    return f"{IMAGE_NAME}:{version}"


def archive_path(version: str = __version__) -> Path:
    return images_dir() / f"agent-identity-{version}.tar"


def stamp_path(version: str = __version__) -> Path:
    """Beside the archive: the digest of the sources it was built from."""
    return archive_path(version).with_suffix(".source")


# What goes into the image: a change to any of these makes a cached archive stale.
SOURCE_FILES = ("pyproject.toml", "Dockerfile", "README.md")
SOURCE_TREE = "src/agent_identity"


def source_digest(root: Path) -> str:
    """sha256 over the image's inputs (path and content, in a stable order)."""
    digest = hashlib.sha256()
    files = [root / f for f in SOURCE_FILES]
    files += sorted(
        p
        for p in (root / SOURCE_TREE).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()


def is_current(root: Path, version: str = __version__) -> bool:
    """The cached archive exists and was built from the sources as they are now."""
    stamp = stamp_path(version)
    return (
        archive_path(version).is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == source_digest(root)
    )


def repo_root() -> Path:
    """The checkout holding the Dockerfile (the project is installed editable)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "Dockerfile").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    raise ImageError(f"cannot find the Dockerfile above {here}")


# --- pure helpers (unit-tested) ----------------------------------------------------


def debootstrap_command(target: Path, suite: str = DEBIAN_SUITE) -> list[str]:
    return [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(DEBOOTSTRAP_INCLUDE)}",
        suite,
        str(target),
        DEBIAN_MIRROR,
    ]


def bud_command(context: Path, tag: str, base: str = BASE_IMAGE) -> list[str]:
    return [
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "-f",
        str(context / "Dockerfile"),
        "-t",
        tag,
        str(context),
    ]


def push_command(tag: str, archive: Path) -> list[str]:
    return ["buildah", "push", tag, f"oci-archive:{archive}:{tag}"]


# --- the shell ---------------------------------------------------------------------


@dataclass
class _Progress:
    t0: float

    def say(self, msg: str) -> None:
        print(f"[image {time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _run(args: Sequence[str], step: str, progress: _Progress, **kw: object) -> str:
    progress.say(step)
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise ImageError(f"{step} failed (exit {proc.returncode}): {' '.join(args)}\n{tail}")
    return str(proc.stdout)


def ensure_tools(progress: _Progress) -> None:
    try:
        apt.ensure_tools(APT_PACKAGES, progress.say, "building the image")
    except apt.PackageError as exc:
        raise ImageError(str(exc)) from exc


def _image_exists(ref: str) -> bool:
    proc = subprocess.run(
        ["buildah", "inspect", "--type", "image", ref], capture_output=True, check=False
    )
    return proc.returncode == 0


def ensure_base(progress: _Progress) -> str:
    """The Debian base image in buildah's storage (made once; the rootfs tarball is cached)."""
    if _image_exists(BASE_IMAGE):
        return BASE_IMAGE
    tarball = images_dir() / f"debian-{DEBIAN_SUITE}-python3-rootfs.tar"
    if not tarball.is_file():
        images_dir().mkdir(parents=True, exist_ok=True)
        rootfs = images_dir() / f".rootfs-{DEBIAN_SUITE}.partial"
        shutil.rmtree(rootfs, ignore_errors=True)
        _run(
            debootstrap_command(rootfs),
            f"debootstrap {DEBIAN_SUITE} (minbase + python3; ~45 s)",
            progress,
        )
        for rel in BASE_PRUNE:
            target = rootfs / rel
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir()
        partial = tarball.with_suffix(".tar.partial")
        _run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            "pack the rootfs",
            progress,
        )
        os.replace(partial, tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
    ctr = _run(["buildah", "from", "scratch"], "buildah from scratch", progress).strip()
    try:
        _run(["buildah", "add", ctr, str(tarball), "/"], "import the rootfs", progress)
        _run(
            [
                "buildah",
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "/usr/bin/python3",
                ctr,
            ],
            "configure the base",
            progress,
        )
        _run(["buildah", "commit", "--rm", ctr, BASE_IMAGE], f"commit {BASE_IMAGE}", progress)
    except ImageError:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
        raise
    return BASE_IMAGE


def build_wheels(root: Path, progress: _Progress) -> Path:
    """The project and all its runtime dependencies as wheels in build/wheels/."""
    wheels = root / "build" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for old in wheels.glob("agent_identity-*.whl"):
        old.unlink()  # always rebuild our own wheel; dependency wheels are reused
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(root)],
        "pip wheel (project + dependencies, outside the image)",
        progress,
    )
    return wheels


def build_image(version: str = __version__) -> Path:
    """Build `localhost/agent-identity:<version>` and export it; returns the OCI archive."""
    progress = _Progress(time.monotonic())
    root = repo_root()
    ensure_tools(progress)
    base = ensure_base(progress)
    build_wheels(root, progress)
    tag = image_ref(version)
    _run(bud_command(root, tag, base), f"buildah bud {tag}", progress)
    # The previous build's layers are dangling now; without this every build keeps ~350 MB.
    subprocess.run(["buildah", "rmi", "--prune"], capture_output=True, check=False)
    archive = archive_path(version)
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)
    stamp_path(version).unlink(missing_ok=True)
    digest = source_digest(root)  # of what was built, even if a file changes meanwhile
    _run(push_command(tag, archive), f"export {archive}", progress)
    stamp_path(version).write_text(digest + "\n")
    progress.say(
        f"done: {tag} ({image_size(tag)} unpacked, archive {archive.stat().st_size / 1e6:.0f} MB)"
        f" {archive}"
    )
    return archive


def ensure_image(version: str = __version__) -> tuple[Path, bool]:
    """The archive, rebuilt when missing or built from other sources; (archive, rebuilt)."""
    if is_current(repo_root(), version):
        return archive_path(version), False
    return build_image(version), True


def image_size(ref: str) -> str:
    """Unpacked size of the image in buildah's storage, as buildah reports it ("341 MB")."""
    out = subprocess.run(
        ["buildah", "images", "--json", ref], capture_output=True, text=True, check=True
    ).stdout
    images = json.loads(out)
    return str(images[0]["size"]) if images else "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    del argv  # no options: the version is the package's
    try:
        print(build_image())
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # `python -m agent_identity.devcluster.image`
    sys.exit(main())
