#!/usr/bin/env bash
# Installs everything ModelPool's demo and tests need on a fresh Debian machine:
# Debian packages, a Python virtual environment (cached outside the repo and keyed
# by pyproject.toml), and the local control plane's binaries built from Go modules.
# Safe to run again: every step is skipped when its result is already there. Safe to run from
# several checkouts at once: they share the cache, so each takes its lock and waits its turn.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MODELPOOL_CACHE:-$HOME/.cache/modelpool}"
py="${MODELPOOL_PYTHON:-python3}"
# For tests only: a folder standing in for / in the system paths this script checks or writes
# (/usr/bin/prometheus, /usr/sbin/nginx, /usr/sbin/policy-rc.d). Empty: the real ones.
sysroot="${MODELPOOL_SETUP_SYSROOT:-}"
mkdir -p "$cache"
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

# 0. One setup at a time per cache, for the whole script: two checkouts on a cold machine would
#    otherwise both build the same venv (the second removing it under the first's pip) and the same
#    Go wrapper modules and binaries. The kernel drops the lock when this process ends, however it
#    ends. Commands that could leave a process running get fd 9 closed (9>&-) so none holds it on.
lock="$cache/setup.lock"
exec 9>>"$lock"
if ! flock -n 9; then
  log "waiting for $lock: another setup is running ($(cat "$lock" 2>/dev/null || true))"
  flock 9
  log "got $lock"
fi
printf 'pid %s, checkout %s\n' "$$" "$here" >"$lock"

# 1. Debian packages: Prometheus (scraping), nginx (reference proxy), iproute2 (test hosts), wrk, curl.
#    Prometheus and nginx are checked at the paths the code runs, not anywhere on PATH.
need_apt=()
[[ -x "$sysroot/usr/bin/prometheus" ]] || need_apt+=(prometheus)  # devcluster/prometheus.py DEFAULT_BINARY
"$py" -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)  # Debian splits it off
[[ -x "$sysroot/usr/sbin/nginx" ]] || need_apt+=(nginx-light)  # tests/bench/router_load.py NGINX
command -v ip >/dev/null || need_apt+=(iproute2)
command -v wrk >/dev/null || need_apt+=(wrk)  # load generator of tests/bench/bench_router.py
command -v curl >/dev/null || need_apt+=(curl)  # the client of tests/unit/routing/test_http_expect.py

# Debian starts a package's services on install (they would listen on 0.0.0.0:80 and :9090); the
# project runs its own instances. A policy-rc.d that answers 101 ("action forbidden") keeps
# invoke-rc.d and deb-systemd-invoke from starting any while this script installs. An existing
# policy-rc.d is set aside and put back afterwards, also when the install fails or is interrupted,
# and by the next run should this one have been killed outright.
policy="$sysroot/usr/sbin/policy-rc.d"
policy_saved="$policy.modelpool-setup-saved"
policy_marker="# written by modelpool .ci/setup.sh while it installs packages; it removes it afterwards"
restore_policy() {
  if [[ -f "$policy" ]] && grep -qxF "$policy_marker" "$policy"; then
    rm -f "$policy"
  fi
  if [[ ! -e "$policy" && ! -L "$policy" && (-e "$policy_saved" || -L "$policy_saved") ]]; then
    mv -f "$policy_saved" "$policy"
  fi
}
restore_policy
installed() { [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == ii* ]]; }
declare -A service_of=([prometheus]=prometheus [nginx-light]=nginx)

if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  if [[ ! -w "$(dirname "$policy")" ]]; then
    echo "setup: installing ${need_apt[*]} takes root (apt-get); run it as root, or install them first" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Only the services of packages this run installs are touched afterwards: one of the same name
  # that was there before (a developer's own prometheus or nginx) is left as it is.
  new_services=()
  for pkg in "${need_apt[@]}"; do
    if [[ -n "${service_of[$pkg]:-}" ]] && ! installed "$pkg"; then
      new_services+=("${service_of[$pkg]}")
    fi
  done
  trap restore_policy EXIT
  if [[ -e "$policy" || -L "$policy" ]]; then
    mv -f "$policy" "$policy_saved"
  fi
  printf '#!/bin/sh\n%s\nexit 101\n' "$policy_marker" >"$policy"
  chmod 755 "$policy"
  # On a fresh cloud machine unattended-upgrades or cloud-init often hold dpkg's lock for minutes.
  apt=(apt-get -o DPkg::Lock::Timeout=600)
  "${apt[@]}" update -qq 9>&-
  "${apt[@]}" install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null 9>&-
  restore_policy
  trap - EXIT
  # The packages also enabled their units for the next boot (that step does not ask policy-rc.d).
  for service in ${new_services[@]+"${new_services[@]}"}; do
    (systemctl disable "$service" 2>/dev/null || true) >/dev/null
  done
fi

# 2. Python environment, keyed by the dependency lists in pyproject.toml.
key="$("$py" - "$here/pyproject.toml" <<'PY'
import hashlib, json, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = json.dumps([project["dependencies"], project.get("optional-dependencies", {})], sort_keys=True)
print(f"py{sys.version_info[0]}{sys.version_info[1]}-" + hashlib.sha256(deps.encode()).hexdigest()[:12])
PY
)"
venv="$cache/venv/$key"

# Each dependency change leaves a venv of ~6 GB behind: remove the others that no setup has used
# for $keep_days days (each run stamps its own with .last-used; one from before the stamps counts
# from when it was made). This runs under the lock, so no other setup is building or stamping
# one; a checkout whose setup ran within $keep_days days keeps its venv. What it cannot see is a
# checkout that has used its .venv without running setup (make demo/test run it) for that long.
keep_days=14
if [[ -d "$cache/venv" ]]; then
  while IFS= read -r -d '' old; do
    recent="$(find "$old" "$old/.complete" "$old/.last-used" -maxdepth 0 -mtime "-$keep_days" 2>/dev/null || true)"
    if [[ -z "$recent" ]]; then
      log "removing $old (no setup used it for $keep_days days)"
      rm -rf "$old"
    fi
  done < <(find "$cache/venv" -mindepth 1 -maxdepth 1 -type d -name 'py*-*' ! -name "$key" -print0)
fi

if [[ ! -f "$venv/.complete" ]]; then
  log "creating $venv (torch is large: the first time takes several minutes)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  # torch first and pinned, so nothing later resolves a second one.
  torch_pin="$(grep -oE '"torch==[^"]+"' "$here/pyproject.toml" | tr -d '"')"
  "$venv/bin/pip" install -q "$torch_pin"
  "$venv/bin/pip" install -q "$here[models,triton,dev]"
  "$venv/bin/pip" uninstall -q -y modelpool
  touch "$venv/.complete"
fi
touch "$venv/.last-used"
# The project itself is not installed into the shared environment: several checkouts may use
# it at once, so each runs its own code through PYTHONPATH=<checkout>/operator (the Makefile sets it).
if [[ -e "$here/.venv" && ! -L "$here/.venv" ]]; then
  echo "setup: $here/.venv is a directory, not the link this script manages; move it away and run again" >&2
  exit 1
fi
ln -sfn "$venv" "$here/.venv"

# 3. Control plane binaries (kube-apiserver, controller-manager, scheduler, kubectl,
#    etcd, kwok, kwokctl, helm), built once from Go modules into $cache/bin.
log "building the local control plane (cached; a cold build took 13 minutes on 2 cores)"
PYTHONPATH="$here/operator" "$venv/bin/python" -m modelpool devcluster build 9>&-
log "setup done"
