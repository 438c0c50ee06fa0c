# The two commands the README promises. Both install what they need first (.ci/setup.sh:
# Debian packages, a cached Python environment, the local control plane built from Go modules).
.PHONY: demo test setup lint crds down

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
