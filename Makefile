# Two commands do everything on a fresh machine: `make demo` (the main job) and `make test`.
# Both run tools/install.sh first, which is a no-op once .venv is set up.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test lint
setup:
	@bash tools/install.sh

demo: setup
	@.venv/bin/zoo demo

test: setup
	@.venv/bin/ruff check .
	@$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	@.venv/bin/ruff check .
