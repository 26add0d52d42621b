# The two commands a new user needs: `make run` (the gateway) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test bench bench-quick clean keys

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) -m gateway.dotenv_setup
	exec $(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

# Stored client keys: make keys ARGS="create --name alice --rpm 60" (also list, revoke, usage).
keys: $(VENV)/.runtime
	$(VENV)/bin/flask --app app keys $(ARGS)

test: $(VENV)/.dev
	$(PY) -m pytest

clean:
	rm -rf $(VENV)

# The benchmark (bench/README.md): the gateway (gunicorn + gevent, 2 workers) against a
# fake Workers AI on 127.0.0.1, next to the fake called directly. Not a test; CI does not run it.
$(VENV)/.bench: $(VENV)/.runtime bench/requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

# BASE=<git ref> also runs that commit's gateway (its own worktree and virtualenv, cached
# under bench/.base) in the same rounds and reports every figure with the ratio current/base.
BASE ?=
BENCH_BASE := $(if $(BASE),--base $(BASE))

bench: $(VENV)/.bench
	$(PY) bench/run.py $(BENCH_BASE) $(BENCH_ARGS)

bench-quick: $(VENV)/.bench
	$(PY) bench/run.py --quick $(BENCH_BASE) $(BENCH_ARGS)
