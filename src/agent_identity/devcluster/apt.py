"""Debian packages the local cluster needs on the host, installed with apt-get when missing.

One helper for every part that needs a host tool (the node's containerd and CNI
plugins, buildah for the pause and project images, debootstrap for the image base),
so all of them install the same way: only as root, non-interactively, with a message
that says the exact command otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping


class PackageError(RuntimeError):
    """A needed package is missing and cannot be installed here (or apt-get failed)."""


def missing_packages(
    tools: Mapping[str, str], which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """The packages of ``tools`` (executable -> Debian package) whose executable is absent."""
    return sorted({pkg for tool, pkg in tools.items() if which(tool) is None})


def install(packages: Iterable[str], say: Callable[[str], None], why: str, hint: str = "") -> None:
    """apt-get install ``packages`` (root only); ``why`` and ``hint`` go into the error."""
    missing = sorted(set(packages))
    if not missing:
        return
    if os.geteuid() != 0:
        raise PackageError(
            f"{why} needs {', '.join(missing)}: sudo apt-get install -y {' '.join(missing)}"
            + (f" ({hint})" if hint else "")
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    say(f"apt-get install {' '.join(missing)}")
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise PackageError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{tail}")


def ensure_tools(
    tools: Mapping[str, str], say: Callable[[str], None], why: str, hint: str = ""
) -> None:
    """Install the packages of the executables in ``tools`` that are not on PATH."""
    install(missing_packages(tools), say, why, hint)
