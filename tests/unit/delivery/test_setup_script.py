"""The fresh-machine setup script (.ci/setup.sh) run in a sandbox, no root, no network, no real apt.

Each test copies the script into a temporary checkout and runs it with a PATH of its own: the few
real tools it needs plus stubs of apt-get, dpkg-query, systemctl and service that log their calls,
a stub Python (MODELPOOL_PYTHON) whose ``-m venv`` makes a venv of logging stubs, a temporary cache
(MODELPOOL_CACHE) and a temporary folder standing in for / (MODELPOOL_SETUP_SYSROOT).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / ".ci" / "setup.sh"
REAL_TOOLS = (
    "bash",
    "cat",
    "chmod",
    "dirname",
    "find",
    "flock",
    "grep",
    "ln",
    "mkdir",
    "mv",
    "rm",
    "tr",
    "touch",
)
DAY = 24 * 3600


def _which(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is not installed (the setup script needs it too)"
    return path


BASH = _which("bash")

APT_GET = r"""
echo "apt-get $* DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-}" >>"$STUB_LOG"
policy="$MODELPOOL_SETUP_SYSROOT/usr/sbin/policy-rc.d"
if [[ " $* " == *" install "* ]]; then
  if [[ -x "$policy" ]]; then
    rc=0; "$policy" prometheus start || rc=$?
    echo "policy-rc.d during install: exit $rc" >>"$STUB_LOG"
  else
    echo "policy-rc.d during install: none" >>"$STUB_LOG"
  fi
  [[ -z "${STUB_APT_FAIL:-}" ]] || exit 100
  packages=0
  for arg in "$@"; do
    if ((packages)) && [[ "$arg" != -* ]]; then
      echo "$arg" >>"$STUB_DPKG"
      case "$arg" in
        prometheus) bin="$MODELPOOL_SETUP_SYSROOT/usr/bin/prometheus" ;;
        nginx-light) bin="$MODELPOOL_SETUP_SYSROOT/usr/sbin/nginx" ;;
        iproute2) bin="$STUB_BIN/ip" ;;
        *) bin="$STUB_BIN/$arg" ;;
      esac
      printf '#!/bin/sh\n' >"$bin"; chmod 755 "$bin"
    fi
    [[ "$arg" != install ]] || packages=1
  done
fi
"""
DPKG_QUERY = r"""
for pkg; do :; done
grep -qxF "$pkg" "$STUB_DPKG" 2>/dev/null || exit 1
printf 'ii '
"""
LOGGING = r"""
echo "$(basename "$0") $*" >>"$STUB_LOG"
"""
VENV_PIP = r"""
echo "venv-pip $*" >>"$STUB_LOG"
"""
VENV_PYTHON = r"""
echo "venv-python $*" >>"$STUB_LOG"
if flock -n "$MODELPOOL_CACHE/setup.lock" true; then
  echo "setup.lock free during venv-python" >>"$STUB_LOG"
else
  echo "setup.lock held during venv-python" >>"$STUB_LOG"
fi
"""
PYTHON = rf"""
if [[ "$1" == -m && "$2" == venv ]]; then
  echo "python -m venv $3" >>"$STUB_LOG"
  mkdir -p "$3/bin"
  cp "$STUB_BIN/.venv-pip" "$3/bin/pip"
  cp "$STUB_BIN/.venv-python" "$3/bin/python"
  exit 0
fi
exec {sys.executable} "$@"
"""


class Sandbox:
    """A checkout with a copy of the script, a PATH of real tools and stubs, a cache and a root."""

    def __init__(self, base: Path, script: Path) -> None:
        self.checkout = base / "checkout"
        self.bin = base / "bin"
        self.root = base / "root"
        self.cache = base / "cache"
        self.log = base / "calls.log"
        self.dpkg = base / "dpkg-installed"
        self.script = self.checkout / ".ci" / "setup.sh"
        for folder in (
            self.script.parent,
            self.bin,
            self.root / "usr/bin",
            self.root / "usr/sbin",
            base / "home",
        ):
            folder.mkdir(parents=True)
        shutil.copy(script, self.script)
        shutil.copy(REPO_ROOT / "pyproject.toml", self.checkout / "pyproject.toml")
        self.log.touch()
        self.dpkg.touch()
        for tool in (*REAL_TOOLS, "basename", "cp"):
            (self.bin / tool).symlink_to(_which(tool))
        self._stub("apt-get", APT_GET)
        self._stub("dpkg-query", DPKG_QUERY)
        self._stub("systemctl", LOGGING)
        self._stub("service", LOGGING)
        self._stub("python3", PYTHON)
        self._stub(".venv-pip", VENV_PIP)
        self._stub(".venv-python", VENV_PYTHON)
        self.env = {
            "PATH": str(self.bin),
            "HOME": str(base / "home"),
            "MODELPOOL_CACHE": str(self.cache),
            "MODELPOOL_PYTHON": str(self.bin / "python3"),
            "MODELPOOL_SETUP_SYSROOT": str(self.root),
            "STUB_LOG": str(self.log),
            "STUB_DPKG": str(self.dpkg),
            "STUB_BIN": str(self.bin),
        }

    def _stub(self, name: str, body: str, where: Path | None = None) -> Path:
        path = (where or self.bin) / name
        path.write_text(f"#!{BASH}\n{body}")
        path.chmod(0o755)
        return path

    def have(self, *tools: str) -> None:
        """Tools already installed: prometheus and nginx where the code runs them and on PATH."""
        for tool in tools:
            self._stub(tool, "exit 0\n")
            if tool == "prometheus":
                self._stub("prometheus", "exit 0\n", self.root / "usr/bin")
            if tool == "nginx":
                self._stub("nginx", "exit 0\n", self.root / "usr/sbin")

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def popen(self, out: Path, **env: str) -> subprocess.Popen[bytes]:
        with out.open("wb") as sink:
            return subprocess.Popen(
                [BASH, str(self.script)], env={**self.env, **env}, stdout=sink, stderr=subprocess.STDOUT
            )

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BASH, str(self.script)], env={**self.env, **env}, capture_output=True, text=True, timeout=60
        )


ALL_TOOLS = ("prometheus", "nginx", "ip", "wrk", "curl")


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path, SCRIPT)


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"setup.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"


def test_a_second_setup_waits_for_the_lock_and_holds_it_to_the_end(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.have(*ALL_TOOLS)
    sandbox.cache.mkdir()
    out = tmp_path / "out.log"
    with (sandbox.cache / "setup.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as another checkout's setup would
        proc = sandbox.popen(out)
        try:
            deadline = time.monotonic() + 30
            while (
                "waiting for" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            assert proc.poll() is None, f"setup.sh did not wait for the lock:\n{out.read_text()}"
            assert "waiting for" in out.read_text(), "no log line says that setup waits"
            assert sandbox.calls() == [], "setup.sh did work before it had the lock"
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        fcntl.flock(held, fcntl.LOCK_UN)
    assert proc.wait(timeout=60) == 0, out.read_text()
    calls = sandbox.calls()
    assert any("devcluster build" in call for call in calls), calls
    assert "setup.lock held during venv-python" in calls, "the Go build ran without the lock"
    assert "setup.lock free during venv-python" not in calls


def test_services_are_left_alone_when_their_packages_were_not_installed_by_this_run(sandbox: Sandbox) -> None:
    sandbox.have("prometheus", "nginx", "ip", "curl")  # only wrk is missing
    _ok(sandbox.run())
    calls = sandbox.calls()
    installs = [call for call in calls if call.startswith("apt-get") and " install " in call]
    assert len(installs) == 1, calls
    assert " wrk " in installs[0]
    assert "prometheus" not in installs[0]
    assert "nginx" not in installs[0]
    assert [call for call in calls if call.startswith(("systemctl", "service"))] == []


def test_new_packages_install_under_a_policy_that_starts_no_service(sandbox: Sandbox) -> None:
    sandbox.have("nginx", "ip", "wrk", "curl")  # prometheus is missing (not installed before)
    _ok(sandbox.run())
    calls = sandbox.calls()
    assert "policy-rc.d during install: exit 101" in calls
    assert not (sandbox.root / "usr/sbin/policy-rc.d").exists(), "policy-rc.d was left in place"
    services = [call for call in calls if call.startswith(("systemctl", "service"))]
    assert services == ["systemctl disable prometheus"], "only prometheus was installed by this run"


def test_a_service_whose_package_was_there_before_is_left_alone(sandbox: Sandbox) -> None:
    sandbox.have("nginx", "ip", "wrk", "curl")
    sandbox.dpkg.write_text("prometheus\n")  # installed, but its binary is gone: reinstalled
    _ok(sandbox.run())
    assert any(call.startswith("apt-get") and " prometheus " in call for call in sandbox.calls())
    assert not any(call.startswith(("systemctl", "service")) for call in sandbox.calls())


def test_a_policy_left_by_a_killed_run_is_undone_by_the_next(sandbox: Sandbox) -> None:
    sandbox.have(*ALL_TOOLS)  # the next run installs nothing
    policy = sandbox.root / "usr/sbin/policy-rc.d"
    # As a run killed by SIGKILL mid-install leaves it: the machine's own set aside, the script's own
    # (recognised by its marker line) in place.
    own = "#!/bin/sh\n# the machine's own\nexit 0\n"
    (policy.parent / "policy-rc.d.modelpool-setup-saved").write_text(own)
    markers = [line for line in SCRIPT.read_text().splitlines() if line.startswith('policy_marker="')]
    marker = markers[0].split('"')[1] if markers else "# (no marker)"
    policy.write_text(f"#!/bin/sh\n{marker}\nexit 101\n")
    _ok(sandbox.run())
    assert policy.read_text() == own
    assert sorted(p.name for p in policy.parent.glob("policy-rc.d*")) == ["policy-rc.d"]


def test_an_existing_policy_is_put_back_even_when_the_install_fails(sandbox: Sandbox) -> None:
    sandbox.have("nginx", "ip", "wrk", "curl")
    policy = sandbox.root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# the machine's own\nexit 0\n")
    policy.chmod(0o755)
    result = sandbox.run(STUB_APT_FAIL="1")
    assert result.returncode != 0, "the stub apt-get failed, so setup must fail"
    assert "policy-rc.d during install: exit 101" in sandbox.calls()
    assert policy.read_text() == "#!/bin/sh\n# the machine's own\nexit 0\n"
    assert os.access(policy, os.X_OK)
    assert sorted(p.name for p in policy.parent.glob("policy-rc.d*")) == ["policy-rc.d"], "a copy was left"
    assert not any(call.startswith(("systemctl", "service")) for call in sandbox.calls())


def test_apt_waits_for_the_dpkg_lock_and_asks_nothing(sandbox: Sandbox) -> None:
    sandbox.have("prometheus", "nginx", "ip", "curl")
    _ok(sandbox.run())
    apt_calls = [call for call in sandbox.calls() if call.startswith("apt-get")]
    assert len(apt_calls) == 2, apt_calls
    for call, command in zip(apt_calls, ("update", "install"), strict=True):
        assert call.startswith(f"apt-get -o DPkg::Lock::Timeout=600 {command} "), call
        assert call.endswith("DEBIAN_FRONTEND=noninteractive"), call


@pytest.mark.parametrize(("tool", "package"), [("prometheus", "prometheus"), ("nginx", "nginx-light")])
def test_a_binary_elsewhere_on_path_is_not_the_one_the_code_runs(
    sandbox: Sandbox, tool: str, package: str
) -> None:
    sandbox.have(*ALL_TOOLS)
    (sandbox.root / ("usr/bin" if tool == "prometheus" else "usr/sbin") / tool).unlink()  # on PATH only
    _ok(sandbox.run())
    installs = [call for call in sandbox.calls() if call.startswith("apt-get") and " install " in call]
    assert len(installs) == 1, sandbox.calls()
    assert f" {package} " in installs[0]


def _venv(cache: Path, name: str, age_days: float, stamped: bool) -> Path:
    venv = cache / "venv" / name
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "big").write_text("x")
    (venv / ".complete").touch()
    then = time.time() - age_days * DAY
    if stamped:
        (venv / ".last-used").touch()
        os.utime(venv / ".last-used", (then, then))
        then = time.time() - 40 * DAY  # made long ago, used recently or not
    os.utime(venv / ".complete", (then, then))
    os.utime(venv, (then, then))
    return venv


def test_venvs_unused_for_14_days_are_pruned_recent_and_current_ones_kept(sandbox: Sandbox) -> None:
    sandbox.have(*ALL_TOOLS)
    old = _venv(sandbox.cache, "py311-0123456789ab", 30, stamped=True)
    old_unstamped = _venv(sandbox.cache, "py311-aaaaaaaaaaaa", 30, stamped=False)
    recent = _venv(sandbox.cache, "py311-bbbbbbbbbbbb", 2, stamped=True)
    recent_unstamped = _venv(sandbox.cache, "py311-cccccccccccc", 1, stamped=False)
    unrelated = _venv(sandbox.cache, "notes", 30, stamped=False)
    _ok(sandbox.run())
    assert not old.exists()
    assert not old_unstamped.exists()
    assert recent.exists()
    assert recent_unstamped.exists()
    assert unrelated.exists(), "only venvs (py<version>-<key>) are pruned"
    current = (sandbox.checkout / ".venv").resolve()
    assert (current / ".complete").exists()
    assert (current / ".last-used").exists()

    # The current venv is kept however old its stamps, and not rebuilt; the run stamps it again.
    then = time.time() - 40 * DAY
    for path in (current / ".last-used", current / ".complete", current):
        os.utime(path, (then, then))
    sandbox.log.write_text("")
    _ok(sandbox.run())
    assert (current / ".complete").exists()
    assert not any(call.startswith(("python -m venv", "venv-pip")) for call in sandbox.calls())
    assert (current / ".last-used").stat().st_mtime > time.time() - 3600
