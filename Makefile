# The two commands: `make run` (serve on SQLite, no setup) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint format bench clean

# Development installs everything; the container installs requirements.txt only.
$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Development only: a first admin "admin"/"admin" unless you say otherwise (the
# server says so as it starts), and an access log line per request on stdout, with
# its request id, action and actor (ACCESS_LOG).
run: $(BIN)/.installed
	ADMIN_USERNAME=$${ADMIN_USERNAME:-admin} ADMIN_PASSWORD=$${ADMIN_PASSWORD:-admin} \
	ACCESS_LOG=$${ACCESS_LOG:-1} \
	GUNICORN_BIND=$${GUNICORN_BIND:-127.0.0.1:$(PORT)} $(BIN)/gunicorn wsgi:app

# Two pytest-xdist workers, whole files to a worker (a module's servers start once): on
# two cores about 1.7x faster than one process (docs/benchmarks.md); more workers
# overload two cores until timing tests (the board's long tasks) fail. TEST_WORKERS=0
# runs in one process.
TEST_WORKERS ?= 2
test: $(BIN)/.installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
