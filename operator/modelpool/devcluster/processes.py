"""Stopping the local processes this project starts (servers, the operator, test hosts), and their CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

KEPT_SETTINGS = frozenset(
    {
        "MODELPOOL_ALLOW_SKIPS",
        "MODELPOOL_CACHE",
        "MODELPOOL_KEEP_CLUSTER",
        "MODELPOOL_PYTHON",
        "MODELPOOL_SHARED",
    }
)
"""The documented inputs of ``make test``/``make demo`` and .ci/setup.sh (where things are cached,
where the shared data is, whether skips are allowed or the clusters kept): every other
``MODELPOOL_*`` variable is an operator setting that :func:`without_caller_settings` drops."""


def without_caller_settings(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the caller's operator settings (``MODELPOOL_PROMETHEUS_URL``,
    ``MODELPOOL_METRICS_PORT``...), which would otherwise reach the operators the demo and the
    tests start; the documented inputs (:data:`KEPT_SETTINGS`) stay."""
    return {k: v for k, v in env.items() if not k.startswith("MODELPOOL_") or k in KEPT_SETTINGS}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def interrupt_on_sigterm() -> Callable[[], None]:
    """From now on a SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so that ``finally`` blocks
    and teardown still stop the processes this one started (by default SIGTERM ends the
    interpreter at once). Returns what puts the previous handler back. Only the main thread may
    set a handler: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return restore


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """:func:`interrupt_on_sigterm` while inside, the previous handler after."""
    restore = interrupt_on_sigterm()
    try:
        yield
    finally:
        restore()


class LocalProcess:
    """A local server process used as a context manager: ``start()`` on enter, ``stop()`` on exit."""

    _proc: subprocess.Popen[bytes] | None = None  # set by ``start()``

    @property
    def pid(self) -> int | None:
        """PID of the running process, or ``None`` before ``start()``."""
        return self._proc.pid if self._proc is not None else None

    def terminate(self) -> None:
        """SIGTERM the process alone (not its group), as the kubelet does to a deleted pod's
        container; ``wait()`` gives the exit code."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """The exit code once the process has exited, or None if it still runs after ``timeout`` s."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _send(proc: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def stop_process(
    proc: subprocess.Popen[bytes] | None, grace: float = 10.0, group: bool = False
) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code (None if never started).

    ``group`` signals the whole process group (processes started with ``start_new_session``),
    so children such as a network namespace's ``ip netns exec`` payload stop too.
    """
    if proc is None:
        return None
    if proc.poll() is None:
        _send(proc, signal.SIGTERM, group)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _send(proc, signal.SIGKILL, group)
            proc.wait(timeout=10)
    return proc.returncode


def kill_process(proc: subprocess.Popen[bytes] | None, group: bool = False) -> None:
    """SIGKILL at once, as a crash would."""
    if proc is not None and proc.poll() is None:
        _send(proc, signal.SIGKILL, group)
        proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of process ``pid``, from ``/proc/<pid>/task/*/schedstat``.

    Nanosecond counts, unlike ``/proc/<pid>/stat``'s clock ticks (10 ms), which are too coarse
    and biased for the few milliseconds a process spends per second at low request rates.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return total / 1e9
