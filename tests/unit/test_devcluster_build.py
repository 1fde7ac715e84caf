"""The pure parts of the binaries build: go.mod derivation and linker flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_identity.devcluster import build

UPSTREAM = """\
module k8s.io/kubernetes

go 1.25.0

godebug default=go1.25

require (
	github.com/kylelemons/godebug v1.1.0 // indirect
	k8s.io/api v0.0.0
	k8s.io/client-go v0.0.0
	k8s.io/utils v0.0.0-20250820121507-0af2bda4dd1d
	k8s.io/kube-openapi v0.0.0-20250910181357-589584f1c912
	sigs.k8s.io/yaml v1.6.0
)

require k8s.io/kubectl v0.0.0

replace (
	k8s.io/api => ./staging/src/k8s.io/api
)
"""


def test_staging_modules_at_v0_0_0_are_replaced_and_pseudo_versions_left_alone() -> None:
    assert build.staging_replaces(UPSTREAM, "v0.35.4") == {
        "k8s.io/api": "v0.35.4",
        "k8s.io/client-go": "v0.35.4",
        "k8s.io/kubectl": "v0.35.4",
    }


def test_godebug_and_go_directive_are_copied() -> None:
    assert build.godebug_lines(UPSTREAM) == ["godebug default=go1.25"]
    assert build.go_directive(UPSTREAM) == "1.25.0"
    block = "module m\n\ngo 1.25\n\ngodebug (\n\tdefault=go1.25\n\twinsymlink=0\n)\n"
    assert build.godebug_lines(block) == ["godebug (\n\tdefault=go1.25\n\twinsymlink=0\n)"]


def test_rendered_gomod_pins_kubernetes_and_replaces_staging() -> None:
    template = (build.hack_dir() / "k8s" / "go.mod.tmpl").read_text()
    gomod = build.render_k8s_gomod(template, UPSTREAM)
    assert f"require k8s.io/kubernetes {build.K8S_VERSION}" in gomod
    assert f"\tk8s.io/client-go => k8s.io/client-go {build.STAGING_VERSION}" in gomod
    assert "k8s.io/utils =>" not in gomod
    assert "godebug default=go1.25" in gomod
    assert "\ngo 1.25.0\n" in gomod


def test_staging_version_follows_kubernetes_version() -> None:
    assert "v0." + build.K8S_VERSION.removeprefix("v1.") == build.STAGING_VERSION


def test_version_ldflags_stamp_both_version_packages() -> None:
    flags = build.version_ldflags("v1.35.4")
    assert flags.startswith("-s -w ")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.35.4" in flags
        assert f"-X {pkg}.gitMajor=1" in flags
        assert f"-X {pkg}.gitMinor=35" in flags


def test_binaries_live_in_the_cache_not_the_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.binaries_dir() == tmp_path / "agent-identity" / "k8s" / build.K8S_VERSION
    assert not build.is_built()
    assert set(build.all_binaries()) >= {
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
        "etcd",
    }


def test_is_built_needs_every_binary_and_a_matching_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    bin_dir = build.binaries_dir()
    bin_dir.mkdir(parents=True)
    for name in build.all_binaries():
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    assert not build.is_built()  # no stamp: an interrupted build
    (bin_dir / build.STAMP_FILE).write_text('{"kubernetes": "v0.0.1"}')
    assert not build.is_built()  # another version's stamp
    (bin_dir / build.STAMP_FILE).unlink()
    (bin_dir / build.STAMP_FILE).write_text(json.dumps(build._stamp()))
    assert build.is_built()
    (bin_dir / "etcd").unlink()
    assert not build.is_built()
