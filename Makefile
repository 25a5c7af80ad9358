# Two commands do everything on a fresh machine: `make demo` (the main job) and `make test`.
# Both run tools/install.sh first, which is a no-op once .venv is set up.
PY := .venv/bin/python
PYTEST_ARGS ?=
# The suite runs in one worker per core (pytest-xdist); a test file stays in one worker, so its module fixtures are
# built once. PYTEST_WORKERS=0 runs it in this process.
PYTEST_WORKERS ?= 2

.PHONY: setup demo test lint kernel-check
setup:
	@bash tools/install.sh

demo: setup
	@.venv/bin/zoo demo

test: setup
	@.venv/bin/ruff check .
	@$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: setup
	@.venv/bin/ruff check .

# Every Triton kernel configuration the zoo launches, compiled for sm_80 / sm_90 / sm_100 without a GPU: registers,
# spills, shared memory, occupancy -> docs/kernels/compile_report.md (+ .json). Exit 1 on a failure, spill or overflow.
kernel-check: setup
	@$(PY) tools/kernel_check.py --out docs/kernels
