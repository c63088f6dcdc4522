# One entry point for people and CI. `make demo` runs the main job, `make test` the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
VMCTL := $(VENV)/bin/vmctl

.PHONY: deps venv demo test test-fast services bench clean

# Debian packages (QEMU, libvirt, the guest image's sources, registry and skopeo for interop tests).
deps:
	bash .ci/deps

$(PY): | deps
	/usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

venv: $(PY)
	$(VENV)/bin/pip install -q -e '.[test]'

services:
	bash .ci/services

demo: deps venv services
	bash demo.sh

# Every tier: model, contract (libvirt test driver) and end-to-end (real libvirtd + QEMU/TCG guests);
# the cloud-guest and system-mode tiers run alongside the rest (tests/tiers.py).
test: deps venv services
	$(PY) -m tests.tiers

# Model and contract tiers only (seconds).
test-fast: venv
	$(PY) -m pytest -q -m "not e2e" tests

# Every bench/*_bench.py, peers in the same run, into BENCHMARKS.md; e.g. BENCH_ARGS="--runs 5 --skip cloud"
# (python -m bench --help).
bench: venv services
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
