# The two commands the README promises. Both install what they need first (.ci/setup.sh:
# Debian packages, a cached Python environment, the local control plane built from Go modules).
.PHONY: demo test setup lint crds down image-lock

# This checkout's code, whatever else the shared environment holds (see .ci/setup.sh).
export PYTHONPATH := $(CURDIR)/operator
PY := .venv/bin/python

setup:
	bash .ci/setup.sh

demo: setup
	$(PY) -m modelpool demo

test: setup
	$(PY) -m pytest

crds:
	$(PY) -m modelpool crds generate

down:
	$(PY) -m modelpool devcluster down

# The image's hashed lock of the core dependencies (the Dockerfile installs only these, with
# --require-hashes), resolved with pip-tools in a throw-away environment. Re-run after changing
# [project].dependencies or [build-system].requires; a unit test checks the two agree.
image-lock:
	rm -rf build/piptools && python3 -m venv build/piptools
	build/piptools/bin/pip install -q pip-tools==7.6.2
	CUSTOM_COMPILE_COMMAND="make image-lock" build/piptools/bin/pip-compile -q --generate-hashes --allow-unsafe --build-deps-for wheel \
	  --strip-extras --no-emit-find-links --no-emit-index-url -o image-requirements.txt pyproject.toml
