"""Build the control plane's binaries from the Go module proxy, once per version.

No registry ships kube-apiserver or etcd for this machine (and there is no
Docker), so we compile them: `k8s.io/kubernetes` in a throwaway module that
replaces its `v0.0.0` staging requirements with the published tags, and etcd
from a tiny `main` in hack/etcd. Binaries land in
`${XDG_CACHE_HOME:-~/.cache}/agent-identity/k8s/<version>/` (etcd in the same
directory), never in the repository; a stamp file marks a complete build.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

K8S_VERSION = "v1.35.4"
# The staging modules (k8s.io/api, client-go, ...) are tagged v0.<minor>.<patch>.
STAGING_VERSION = "v0." + K8S_VERSION.removeprefix("v1.")
ETCD_VERSION = "v3.6.16"

COREDNS_VERSION = "v1.15.0"

# The commands built from k8s.io/kubernetes/cmd/<name>: the control plane's, then the node's.
CONTROL_PLANE_COMMANDS: tuple[str, ...] = ("kube-apiserver", "kube-controller-manager", "kubectl")
NODE_COMMANDS: tuple[str, ...] = ("kubelet", "kube-scheduler", "kube-proxy")
K8S_COMMANDS: tuple[str, ...] = (*CONTROL_PLANE_COMMANDS, *NODE_COMMANDS)
ETCD_BINARY = "etcd"
COREDNS_BINARY = "coredns"

STAMP_FILE = ".complete.json"
HEARTBEAT_SECONDS = 20.0


class BuildError(RuntimeError):
    """A step of the build failed; the message names the step and its log."""


def cache_root() -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/agent-identity`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agent-identity"


def binaries_dir() -> Path:
    """Where the control plane's binaries (all four, etcd included) live."""
    return cache_root() / "k8s" / K8S_VERSION


def binary(name: str) -> Path:
    return binaries_dir() / name


def required_binaries(node: bool = True) -> tuple[str, ...]:
    """The binaries a cluster needs: the control plane's, plus the node's when `node`."""
    if node:
        return (*K8S_COMMANDS, ETCD_BINARY, COREDNS_BINARY)
    return (*CONTROL_PLANE_COMMANDS, ETCD_BINARY)


def all_binaries() -> tuple[str, ...]:
    return required_binaries(node=True)


def _versions() -> dict[str, str]:
    return {"kubernetes": K8S_VERSION, "etcd": ETCD_VERSION, "coredns": COREDNS_VERSION}


def _stamp(commands: Sequence[str] | None = None) -> dict[str, object]:
    """The stamp of a build that produced `commands` (default: every binary)."""
    built = all_binaries() if commands is None else commands
    return {**_versions(), "commands": sorted(set(built))}


def stamp_covers(stamp: object, wanted: Sequence[str]) -> bool:
    """Whether a stamp (the JSON of a finished build) vouches for every `wanted` binary.

    The stamp lists the binaries a build produced; versions must match this build's
    inputs (a stamp without a `coredns` key predates the node and vouches for no coredns).
    """
    if not isinstance(stamp, dict):
        return False
    commands = stamp.get("commands")
    if not isinstance(commands, list):
        return False
    for name in wanted:
        if name not in commands:
            return False
        key = "coredns" if name == COREDNS_BINARY else "etcd" if name == ETCD_BINARY else None
        version = _versions()[key] if key else K8S_VERSION
        if stamp.get(key or "kubernetes") != version:
            return False
    return True


def _read_stamp(bin_dir: Path) -> object:
    try:
        return json.loads((bin_dir / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None


def _present(bin_dir: Path) -> list[str]:
    """Binaries in `bin_dir` the stamp vouches for and that are executable."""
    stamp = _read_stamp(bin_dir)
    return [
        b for b in all_binaries() if stamp_covers(stamp, [b]) and os.access(bin_dir / b, os.X_OK)
    ]


def is_built(node: bool = True) -> bool:
    """True when every binary needed (the node's too, unless `node=False`) is built."""
    present = _present(binaries_dir())
    return all(b in present for b in required_binaries(node))


def hack_dir() -> Path:
    """The repository's hack/ folder (the project is installed editable)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "hack" / "etcd" / "main.go").is_file():
            return parent / "hack"
    raise BuildError(f"cannot find hack/etcd/main.go above {here}")


# --- pure helpers (unit-tested) -------------------------------------------------

_REQUIRE_BLOCK = re.compile(r"^require\s*\((.*?)^\)", re.S | re.M)
_REQUIRE_LINE = re.compile(r"^require\s+(\S+)\s+(\S+)", re.M)


def _requirements(gomod: str) -> list[tuple[str, str]]:
    reqs: list[tuple[str, str]] = []
    for block in _REQUIRE_BLOCK.findall(gomod):
        for line in block.splitlines():
            fields = line.split("//", 1)[0].split()
            if len(fields) >= 2:
                reqs.append((fields[0], fields[1]))
    reqs.extend(_REQUIRE_LINE.findall(gomod))
    return reqs


def staging_replaces(gomod: str, version: str = STAGING_VERSION) -> dict[str, str]:
    """Every `k8s.io/*` module required at exactly `v0.0.0` -> the published `version`.

    Modules at pseudo-versions (`k8s.io/utils v0.0.0-2025...`) are real
    upstream versions and must stay as they are.
    """
    return {
        mod: version
        for mod, ver in _requirements(gomod)
        if mod.startswith("k8s.io/") and ver == "v0.0.0"
    }


def godebug_lines(gomod: str) -> list[str]:
    """The `godebug` directives (single-line or block) of a go.mod, verbatim."""
    out: list[str] = []
    block = re.search(r"^godebug\s*\((.*?)^\)", gomod, re.S | re.M)
    if block:
        out.append("godebug (" + block.group(1).rstrip() + "\n)")
    out.extend(m.group(0).strip() for m in re.finditer(r"^godebug\s+[^(\s].*$", gomod, re.M))
    return out


def go_directive(gomod: str) -> str:
    m = re.search(r"^go\s+(\S+)", gomod, re.M)
    if not m:
        raise BuildError("no go directive in k8s.io/kubernetes' go.mod")
    return m.group(1)


def render_k8s_gomod(template: str, upstream_gomod: str) -> str:
    replaces = staging_replaces(upstream_gomod)
    return template.format(
        go=go_directive(upstream_gomod),
        godebug="\n".join(godebug_lines(upstream_gomod)),
        k8s_version=K8S_VERSION,
        replaces="\n".join(f"\t{mod} => {mod} {ver}" for mod, ver in sorted(replaces.items())),
    )


def version_ldflags(version: str = K8S_VERSION) -> str:
    """`-s -w` plus the version stamps `kubectl version` and `/version` report."""
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    return env


# --- running the build -------------------------------------------------------------


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.monotonic()

    def say(self, msg: str) -> None:
        if self.enabled:
            print(
                f"[devcluster build {_fmt(time.monotonic() - self.t0):>6}] {msg}", file=sys.stderr
            )


def _run(
    args: Sequence[str], cwd: Path, log: Path, progress: _Progress, step: str
) -> subprocess.CompletedProcess[str]:
    """Run a go command, its output to `log`, with a heartbeat line while it runs."""
    progress.say(step)
    done = threading.Event()
    started = time.monotonic()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            progress.say(f"  ... {step} ({_fmt(time.monotonic() - started)})")

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        with log.open("a") as fh:
            fh.write(f"\n$ {' '.join(args)}\n")
            fh.flush()
            proc = subprocess.run(
                list(args), cwd=cwd, env=go_env(), stdout=subprocess.PIPE, stderr=fh, text=True
            )
    finally:
        done.set()
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise BuildError(f"{step} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return proc


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("`go` is not on PATH; the control plane is built from source with Go")
    return go


def _build_kubernetes(
    work: Path, out: Path, progress: _Progress, commands: Sequence[str] = K8S_COMMANDS
) -> None:
    go = _go()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    info = json.loads(
        _run(
            [go, "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"],
            work,
            log,
            progress,
            f"download k8s.io/kubernetes {K8S_VERSION}",
        ).stdout
    )
    upstream = Path(info["GoMod"]).read_text()
    template = (hack_dir() / "k8s" / "go.mod.tmpl").read_text()
    (work / "go.mod").write_text(render_k8s_gomod(template, upstream))
    pkgs = [f"k8s.io/kubernetes/cmd/{c}" for c in commands]
    # Pin every package to the release: `go get pkg` alone means @upgrade and
    # would pull a newer kubernetes whose staging modules do not match.
    _run(
        [go, "get", "-tool", *(f"{p}@{K8S_VERSION}" for p in pkgs)],
        work,
        log,
        progress,
        "resolve and download dependencies (go get -tool)",
    )
    _run(
        [go, "build", "-trimpath", "-ldflags", version_ldflags(), "-o", f"{out}/", *pkgs],
        work,
        log,
        progress,
        f"compile {', '.join(commands)}",
    )


def _build_coredns(work: Path, out: Path, progress: _Progress) -> None:
    """CoreDNS with the few plugins the cluster DNS uses (hack/coredns/main.go)."""
    go = _go()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    src = hack_dir() / "coredns"
    for name in ("main.go", "go.mod", "go.sum"):
        if (src / name).exists():
            shutil.copy2(src / name, work / name)
    _run(
        [go, "get", f"github.com/coredns/coredns@{COREDNS_VERSION}"],
        work,
        log,
        progress,
        f"download CoreDNS {COREDNS_VERSION}",
    )
    _run([go, "mod", "tidy"], work, log, progress, "go mod tidy (coredns)")
    ldflags = f"-s -w -X github.com/coredns/coredns/coremain.GitCommit={COREDNS_VERSION}"
    _run(
        [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out / COREDNS_BINARY), "."],
        work,
        log,
        progress,
        "compile coredns",
    )


def _build_etcd(work: Path, out: Path, progress: _Progress) -> None:
    go = _go()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    src = hack_dir() / "etcd"
    for name in ("main.go", "go.mod", "go.sum"):
        if (src / name).exists():
            shutil.copy2(src / name, work / name)
    _run(
        [go, "get", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"],
        work,
        log,
        progress,
        f"download etcd {ETCD_VERSION}",
    )
    _run([go, "mod", "tidy"], work, log, progress, "go mod tidy (etcd)")
    _run(
        [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / ETCD_BINARY), "."],
        work,
        log,
        progress,
        "compile etcd",
    )


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time per cache (several test sessions may start at once)."""
    lock = cache_root() / "build" / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_built(progress: bool = True, force: bool = False, node: bool = True) -> Path:
    """Build the binaries that are missing (the node's too unless `node=False`).

    Returns the binaries directory. The first build of the control plane takes ~11
    minutes on 2 cores; the node's binaries add a few minutes. Binaries already built
    are kept: adding the node to a cached control plane builds only the node's.
    """
    bin_dir = binaries_dir()
    wanted = list(required_binaries(node))
    if is_built(node) and not force:
        return bin_dir
    with build_lock():
        present = [] if force else _present(bin_dir)  # another process may have built them
        missing = [b for b in wanted if b not in present]
        if not missing:
            return bin_dir
        prog = _Progress(progress)
        prog.say(
            f"building {', '.join(missing)} (Kubernetes {K8S_VERSION}, etcd {ETCD_VERSION}, "
            f"CoreDNS {COREDNS_VERSION}) into {bin_dir} (first time: ~11 min on 2 cores)"
        )
        # Build into a scratch directory and move into place, so an interrupted build
        # never leaves a half-written binary that looks usable.
        staging = bin_dir.parent / f".{bin_dir.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
        work = cache_root() / "build"
        k8s = [c for c in K8S_COMMANDS if c in missing]
        if k8s:
            _build_kubernetes(work / f"kubernetes-{K8S_VERSION}", staging, prog, k8s)
        if ETCD_BINARY in missing:
            _build_etcd(work / f"etcd-{ETCD_VERSION}", staging, prog)
        if COREDNS_BINARY in missing:
            _build_coredns(work / f"coredns-{COREDNS_VERSION}", staging, prog)
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name in missing:
            os.replace(staging / name, bin_dir / name)
        (bin_dir / STAMP_FILE).write_text(json.dumps(_stamp([*present, *missing]), indent=2) + "\n")
        shutil.rmtree(staging, ignore_errors=True)
        prog.say(f"done: {bin_dir}")
    return bin_dir


if __name__ == "__main__":  # pragma: no cover - `python -m agent_identity.devcluster.build`
    try:
        ensure_built(force="--force" in sys.argv, node="--no-node" not in sys.argv)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
