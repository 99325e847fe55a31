# Herd: the commands the README lists. Each creates the virtualenv first if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HERD := $(PYTHON) -m deploy.herd

.PHONY: up down status test test-failover lint bench drills audit clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

up: $(VENV)/.installed  ## bring the whole herd up with demo data and print its URL
	$(HERD) up $(if $(REPLICAS),--replicas $(REPLICAS))

down:  ## stop every process of the herd
	$(HERD) down

status:  ## one line per process of the herd
	$(HERD) status

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -W ignore manage.py makemigrations --check --dry-run

test: $(VENV)/.installed lint  ## lint, then the tests on private PostgreSQL, Redis and RabbitMQ
	$(HERD) test $(PYTEST_ARGS)

test-failover: $(VENV)/.installed  ## the Patroni failover test alone (also in make test; under a minute)
	$(HERD) test -m patroni deploy/tests/test_failover.py

bench: $(VENV)/.installed  ## the benchmark suite on a herd of its own, written into docs/PERFORMANCE.md
	$(PY) -m bench.report; status=$$?; $(HERD) --profile bench down; exit $$status

drills: $(VENV)/.installed  ## fault drills under load on a herd of their own (PostgreSQL under Patroni), written into docs/RELIABILITY.md
	$(PY) -m deploy.drills; status=$$?; $(HERD) --profile drills down; exit $$status

audit: $(VENV)/.installed  ## Lighthouse scores and screenshots on a herd of its own, written into docs/DESIGN-AUDIT.md
	$(PY) -m deploy.audit; status=$$?; $(HERD) --profile audit down; exit $$status

# The image's hashed lock (deploy/Containerfile: pip --require-hashes), for every platform
# and Python 3.11 patch release (markers kept). Needs uv (pip install uv) and PyPI.
UV ?= uv
requirements.hashes.txt: requirements.txt
	{ sed -n '1,4p' $@; $(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	    --no-header --no-annotate --index-url https://pypi.org/simple requirements.txt; } > $@.new
	mv $@.new $@

clean: down
	rm -rf .herd $(VENV)
