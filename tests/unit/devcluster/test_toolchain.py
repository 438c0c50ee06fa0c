"""The control plane's build: which cached binaries count as built, and the Go build's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelpool.devcluster import toolchain


def _built(out: Path, tools: tuple[str, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        (out / tool).write_text("#!/bin/sh\n")
    toolchain._mark_built(out, tools)


def test_a_helm_bump_builds_helm_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _built(toolchain.bin_dir(tmp_path), ("helm",))
    assert toolchain._is_built(toolchain.bin_dir(tmp_path), "helm")
    before = toolchain.bin_dir(tmp_path)
    monkeypatch.setattr(toolchain, "HELM_VERSION", "v3.99.0")
    assert toolchain.bin_dir(tmp_path) != before
    assert not toolchain._is_built(toolchain.bin_dir(tmp_path), "helm")


def test_the_go_build_ignores_a_workspace_and_a_cross_compile_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A go.work in an ancestor folder fails `-mod=mod`; GOOS & co. would build binaries for
    # another machine, stamped as built for this one.
    for name, value in {
        "GOWORK": "/somewhere/go.work",
        "GOOS": "windows",
        "GOARCH": "arm64",
        "GOAMD64": "v4",
        "GOEXPERIMENT": "rangefunc",
        "GOPROXY": "http://127.0.0.1:9/proxy",
    }.items():
        monkeypatch.setenv(name, value)
    env = toolchain.go_env()
    assert env["GOWORK"] == "off"
    assert not {"GOOS", "GOARCH", "GOAMD64", "GOEXPERIMENT"} & env.keys()
    assert env["GOTOOLCHAIN"] == "local" and env["CGO_ENABLED"] == "0"
    assert env["GOPROXY"] == "http://127.0.0.1:9/proxy"  # the caller's module source stays


def test_a_full_cache_needs_no_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _built(toolchain.bin_dir(tmp_path), toolchain.ALL_TOOLS)
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))
    reports = toolchain.build_all(tmp_path)
    assert {r.tool for r in reports} == set(toolchain.ALL_TOOLS)
    assert all(r.cached for r in reports)


def test_a_missing_binary_without_go_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _built(toolchain.bin_dir(tmp_path), tuple(t for t in toolchain.ALL_TOOLS if t != "helm"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))
    with pytest.raises(RuntimeError, match="Go is not on PATH"):
        toolchain.build_all(tmp_path)
