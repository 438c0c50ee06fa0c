# The two commands the README promises. Both install what they need first (.ci/setup.sh:
# Debian packages, a cached Python environment, the local control plane built from Go modules).
.PHONY: demo test setup lint crds down

setup:
	bash .ci/setup.sh

demo: setup
	.venv/bin/modelpool demo

test: setup
	.venv/bin/python -m pytest

crds:
	.venv/bin/modelpool crds generate

down:
	.venv/bin/modelpool devcluster down
