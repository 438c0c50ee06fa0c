#!/usr/bin/env bash
# Installs everything ModelPool's demo and tests need on a fresh Debian machine:
# Debian packages, a Python virtual environment (cached outside the repo and keyed
# by pyproject.toml), and the local control plane's binaries built from Go modules.
# Safe to run again: every step is skipped when its result is already there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MODELPOOL_CACHE:-$HOME/.cache/modelpool}"
mkdir -p "$cache"
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

# 1. Debian packages: Prometheus (scraping), nginx (reference proxy), iproute2 (test hosts), wrk, curl.
need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
"${MODELPOOL_PYTHON:-python3}" -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)  # Debian splits it off
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v wrk >/dev/null || need_apt+=(wrk)  # load generator of tests/bench/bench_router.py
command -v curl >/dev/null || need_apt+=(curl)  # the client of tests/unit/routing/test_http_expect.py
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts these as services on install; the project runs its own instances. Only the
  # services are stopped: other checkouts' test processes of the same name are left alone.
  for service in prometheus nginx; do
    (systemctl disable --now "$service" 2>/dev/null || service "$service" stop 2>/dev/null || true) >/dev/null
  done
fi

# 2. Python environment, keyed by the dependency lists in pyproject.toml.
py="${MODELPOOL_PYTHON:-python3}"
key="$("$py" - "$here/pyproject.toml" <<'PY'
import hashlib, json, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = json.dumps([project["dependencies"], project.get("optional-dependencies", {})], sort_keys=True)
print(f"py{sys.version_info[0]}{sys.version_info[1]}-" + hashlib.sha256(deps.encode()).hexdigest()[:12])
PY
)"
venv="$cache/venv/$key"
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
PYTHONPATH="$here/operator" "$venv/bin/python" -m modelpool devcluster build
log "setup done"
