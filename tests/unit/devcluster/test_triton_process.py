"""TritonProcess and prepare_backends with stand-ins for the wheel's ``tritonserver`` (no server runs):
what a failed start leaves, how stop() signals the process group, where the backends are copied."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpool.devcluster import triton
from modelpool.devcluster.triton import TritonProcess, prepare_backends


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TritonProcess]:
    """A TritonProcess whose server is ``sleep 60`` (it ends on SIGINT, as tritonserver does)."""
    monkeypatch.setattr(TritonProcess, "command", lambda self: ["sleep", "60"])
    monkeypatch.setattr(triton, "triton_environment", lambda: dict(os.environ))
    server = TritonProcess(tmp_path, ["m"], startup_timeout=30)
    yield server
    if server.pid is not None:  # what the test left running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_start_stops_the_server(
    stand_in: TritonProcess, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    pids: list[int] = []

    def ready(self: TritonProcess) -> bool:
        assert self.pid is not None
        pids.append(self.pid)
        raise error("interrupted while waiting")

    monkeypatch.setattr(TritonProcess, "_ready", ready)
    try:
        with pytest.raises(error):
            stand_in.start()
        assert pids and _gone(pids[0]), "the server outlived its failed start"
        assert not stand_in.log_path.exists()
        assert not stand_in.running
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_stop_signals_the_group_before_reaping_and_only_once(
    stand_in: TritonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once the leader is reaped its PID (the group's ID) may belong to an unrelated group.
    monkeypatch.setattr(TritonProcess, "_ready", lambda self: True)
    stand_in.start()
    proc = stand_in._proc
    assert proc is not None
    calls: list[tuple[int, signal.Signals, int | None]] = []
    real_killpg = os.killpg

    def killpg(pgid: int, sig: signal.Signals) -> None:
        calls.append((pgid, sig, proc.returncode))  # returncode is set once Popen reaped it
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    stand_in.stop()
    assert calls and calls[0][1] == signal.SIGINT
    assert all(reaped is None for _, _, reaped in calls), calls
    assert proc.returncode is not None and _gone(proc.pid)
    signalled = len(calls)
    stand_in.stop()  # again: nothing left to signal
    assert len(calls) == signalled, calls[signalled:]
    assert not stand_in.running


def _fake_wheel(root: Path) -> Path:
    server = root / "tritonserver"
    (server / "bin").mkdir(parents=True)
    (server / "bin" / "tritonserver").write_text("")
    (server / "backends" / "python").mkdir(parents=True)
    (server / "backends" / "python" / "libtriton_python.so").write_text("so")
    stub = server / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    stub.mkdir(parents=True)
    (stub / "triton_python_backend_stub").write_text("stub")
    return server


def test_backends_are_copied_beside_their_folder_even_when_tmp_is_another_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh cache (no triton-backends folder yet) and a TMPDIR on tmpfs: a temporary copy
    # made in TMPDIR cannot be renamed into the cache (EXDEV).
    server = _fake_wheel(tmp_path / "wheel")
    monkeypatch.setattr(triton, "tritonserver_root", lambda: server)
    shm = Path(tempfile.mkdtemp(prefix="modelpool-test-tmpdir-", dir="/dev/shm"))
    monkeypatch.setattr(tempfile, "tempdir", str(shm))
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args: object, **kwargs: object) -> str:
        path = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        made.append(Path(path))
        return str(path)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    dest = tmp_path / "cache" / "triton-backends" / "py-test"
    try:
        assert prepare_backends(dest) == dest
        assert (dest / "python" / "triton_python_backend_stub").read_text() == "stub"
        assert os.access(dest / "python" / "triton_python_backend_stub", os.X_OK)
        assert [p.parent for p in made] == [dest.parent]
        assert list(dest.parent.iterdir()) == [dest]  # the temporary copy is gone
        assert not list(shm.iterdir())
        assert prepare_backends(dest) == dest  # cached
    finally:
        subprocess.run(["rm", "-rf", str(shm)], check=False)


def _binding_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in server that, like tritonserver, binds its three ports and exits 1 saying a port
    is "already in use" when one of them is taken (then ready once it holds all three)."""
    script = (
        "import socket, sys, time\n"
        "socks = []\n"
        "for port in map(int, sys.argv[1:]):\n"
        "    s = socket.socket()\n"
        "    try:\n"
        "        s.bind(('127.0.0.1', port))\n"
        "    except OSError:\n"
        "        print(f\"Socket '127.0.0.1:{port}' already in use\", flush=True)\n"
        "        sys.exit(1)\n"
        "    socks.append(s)\n"
        "time.sleep(60)\n"
    )

    def command(self: TritonProcess) -> list[str]:
        return [sys.executable, "-c", script, *map(str, (self.http_port, self.grpc_port, self.metrics_port))]

    monkeypatch.setattr(TritonProcess, "command", command)
    monkeypatch.setattr(triton, "triton_environment", lambda: dict(os.environ))
    monkeypatch.setattr(TritonProcess, "_ready", lambda self: self._leader_exited(0.5) is False)


def test_a_port_taken_before_the_server_binds_it_is_tried_again_on_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """free_port() only says a port was free a moment ago: another process took the GRPC port
    before tritonserver bound it, and the start failed (a CI run lost nine tests that way)."""
    _binding_server(monkeypatch)
    server = TritonProcess(tmp_path, ["m"], startup_timeout=30)
    taken = server.grpc_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        try:
            server.start()
            assert server.running and server.grpc_port != taken
        finally:
            server.stop()


def test_ports_the_caller_chose_are_never_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _binding_server(monkeypatch)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        server = TritonProcess(tmp_path, ["m"], startup_timeout=30, grpc_port=taken)
        with pytest.raises(triton.PortTaken, match="already in use"):
            server.start()
        assert server.grpc_port == taken and not server.running
