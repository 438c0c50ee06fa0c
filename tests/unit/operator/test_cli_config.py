"""The operator's flags and environment are checked before it starts: each mistake is one line
naming the flag or variable and the fix, and exit code 2 (not a traceback every 60 s)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpool.cli import build_parser, main
from modelpool.startup import config_problems


def _problems(*argv: str, **env: str) -> list[str]:
    return config_problems(build_parser().parse_args(["operator", "run", *argv]), env)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_sound_configuration_has_no_problems() -> None:
    assert (
        _problems(
            "--prometheus-url",
            "http://prometheus.monitoring:9090",
            "--namespace",
            "team-a",
            MODELPOOL_PROMETHEUS_MATCHERS='namespace="prod", cluster=~"eu-.*"',
        )
        == []
    )


@pytest.mark.parametrize("url", ["not-a-url", "ftp://prom:9090", "http://[::1", "http://"])
def test_a_malformed_prometheus_url_is_named(url: str) -> None:
    (flag,) = _problems("--prometheus-url", url)
    assert flag.startswith("--prometheus-url=") and "http(s)://" in flag
    (env,) = _problems(MODELPOOL_PROMETHEUS_URL=url)
    assert env.startswith("$MODELPOOL_PROMETHEUS_URL=")


@pytest.mark.parametrize("matchers", ["namespace=prod", '{namespace="prod"}', 'a="b",', "ns"])
def test_malformed_prometheus_matchers_are_named(matchers: str) -> None:
    (problem,) = _problems(MODELPOOL_PROMETHEUS_MATCHERS=matchers)
    assert "$MODELPOOL_PROMETHEUS_MATCHERS" in problem


@pytest.mark.parametrize("namespace", ["Bad_NS", "-a", "a" * 64, "team.a", ""])
def test_a_malformed_namespace_is_named(namespace: str) -> None:
    (problem,) = _problems(f"--namespace={namespace}")
    assert problem.startswith("--namespace=")


def test_ports_in_use_are_named(busy_port: int) -> None:
    (metrics,) = _problems("--metrics-port", str(busy_port), MODELPOOL_METRICS_ADDR="127.0.0.1")
    assert metrics.startswith(f"--metrics-port={busy_port}") and "cannot listen" in metrics
    (env,) = _problems(MODELPOOL_METRICS_PORT=str(busy_port), MODELPOOL_METRICS_ADDR="127.0.0.1")
    assert env.startswith("$MODELPOOL_METRICS_PORT")
    (live,) = _problems("--liveness", f"http://127.0.0.1:{busy_port}/healthz")
    assert live.startswith("--liveness=") and "cannot listen" in live


@pytest.mark.parametrize("url", ["0.0.0.0:8081", "https://0.0.0.0:8081/healthz", "http://0.0.0.0:99999/"])
def test_a_malformed_liveness_url_is_named(url: str) -> None:
    (problem,) = _problems("--liveness", url)
    assert problem.startswith("--liveness=")


def test_a_sound_readiness_url_has_no_problems() -> None:
    live, ready, metrics = _free_ports(3)
    assert (
        _problems(
            "--liveness",
            f"http://127.0.0.1:{live}/healthz",
            "--readiness",
            f"http://127.0.0.1:{ready}/readyz",
            "--metrics-port",
            str(metrics),
            MODELPOOL_METRICS_ADDR="127.0.0.1",
        )
        == []
    )


@pytest.mark.parametrize("url", ["0.0.0.0:8082", "https://0.0.0.0:8082/readyz", "http://0.0.0.0:99999/"])
def test_a_malformed_readiness_url_is_named(url: str) -> None:
    (problem,) = _problems("--readiness", url)
    assert problem.startswith(f"--readiness={url!r}") and "http://0.0.0.0:8082/readyz" in problem, problem


def test_a_readiness_port_in_use_is_named(busy_port: int) -> None:
    (problem,) = _problems("--readiness", f"http://127.0.0.1:{busy_port}/readyz")
    assert problem.startswith(f"--readiness=http://127.0.0.1:{busy_port}/readyz: cannot listen"), problem
    assert problem.endswith("give a free port (readiness.port in the chart)"), problem


def test_a_readiness_port_shared_with_liveness_or_metrics_is_named() -> None:
    (port,) = _free_ports(1)
    url = f"http://127.0.0.1:{port}/readyz"
    (live,) = _problems("--readiness", url, "--liveness", f"http://127.0.0.1:{port}/healthz")
    assert live.startswith(f"--readiness and --liveness both use port {port}: give them two ports"), live
    (metrics,) = _problems(
        "--readiness", url, MODELPOOL_METRICS_PORT=str(port), MODELPOOL_METRICS_ADDR="127.0.0.1"
    )
    assert metrics.startswith(f"--readiness and $MODELPOOL_METRICS_PORT both use port {port}"), metrics
    (flag,) = _problems("--readiness", url, "--metrics-port", str(port), MODELPOOL_METRICS_ADDR="127.0.0.1")
    assert flag.startswith(f"--readiness and --metrics-port both use port {port}"), flag
    assert "readiness.port in the chart" in metrics


def _free_ports(count: int) -> list[int]:
    """Ports free now, all different (held open together while they are picked)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def test_a_bad_metrics_port_env_is_named() -> None:
    (problem,) = _problems(MODELPOOL_METRICS_PORT="http")
    assert problem.startswith("$MODELPOOL_METRICS_PORT")


@pytest.mark.parametrize(
    "argv", [["--log-level", "LOUD", "operator", "run"], ["operator", "run", "--metrics-port", "0"]]
)
def test_bad_flag_values_are_argparse_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, "", "this: [is not\n", "apiVersion: v1\nkind: Config\n"])
def test_an_unusable_kubeconfig_is_one_line_and_exit_2(
    content: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["operator", "run"]) == 2  # before kopf starts: nothing to stop
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "$KUBECONFIG" in errors[0] and str(path) in errors[0], errors
    assert "\n" not in errors[0]
