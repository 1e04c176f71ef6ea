# tagrec: two commands matter. `make demo` sets everything up and runs the main job on the
# embedded openclipart dataset; `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TAGREC_HOME ?= $(CURDIR)/data
DAGSTER_HOME := $(TAGREC_HOME)/dagster
export TAGREC_HOME DAGSTER_HOME

.PHONY: setup system wordnet dagster-home demo demo-corel5k demo-full test test-slow test-ui test-cluster deploy-extra ui validate validate-deploy bench soak clean-data

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

## setup: Python packages (.venv), Debian packages (WordNet, openclipart), WordNet for nltk (machine-wide)
setup: $(VENV)/.installed system

system: $(VENV)/.installed
	bash scripts/setup_system.sh "$(TAGREC_HOME)"

## wordnet: only what the test suite needs from Debian: WordNet, and its nltk copy (one per machine)
wordnet: $(VENV)/.installed
	bash scripts/setup_system.sh --wordnet-only "$(TAGREC_HOME)"

## dagster-home: the instance settings, and its storage created once before anything runs
## (two processes opening a fresh instance at once would race to create its tables)
dagster-home: $(VENV)/.installed
	mkdir -p "$(DAGSTER_HOME)"
	cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"
	$(VENV)/bin/dagster instance migrate

## demo: set up, materialise every asset of the default dataset (openclipart), print results
## (quick profile: 2 tuning trials per model, refit on train+val, epochs capped, 3 seeds)
demo: setup dagster-home
	$(PY) -m pipelines.demo --dataset openclipart

## demo-corel5k: the same quick profile on Corel5k (its folder: TAGREC_COREL5K, default ../shared/data/corel5k)
demo-corel5k: setup dagster-home
	$(PY) -m pipelines.demo --dataset corel5k

## demo-full: every model tuned on validation with 30 Optuna trials (60 refit-free re-scorings per
## metric family), the models' own epoch budgets, refit on train+val, 5 seeds; openclipart and Corel5k
demo-full: setup dagster-home
	$(PY) -m pipelines.demo --dataset openclipart --dataset corel5k --profile full

## test: the fast test suite (what CI runs)
test: $(VENV)/.installed
	$(PY) -m pytest -q

## test-slow: the long paths (full corpora, real training runs)
test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

## test-ui: the real-browser check of the Dagster UI (installs chromium; screenshot in .artifacts/)
test-ui: $(VENV)/.installed wordnet
	command -v chromium >/dev/null || sudo apt-get install -y --no-install-recommends chromium || apt-get install -y --no-install-recommends chromium
	$(PY) -m pytest -q -m slow tests/test_ui_browser.py

## test-cluster: real PostgreSQL + Redis (Debian packages, installed if missing) on 127.0.0.1 in a
## temporary folder, two dagster-celery workers; the openclipart fixture's feature shards and the
## assets after them through Celery, compared with the in-process run; everything stopped by PID
$(VENV)/.deploy: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,deploy]'
	touch $@

deploy-extra: $(VENV)/.deploy

test-cluster: $(VENV)/.deploy wordnet
	@missing=""; command -v redis-server >/dev/null || missing="redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing \
	  || { $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; }; fi
	$(PY) -m pytest -q -m cluster -s tests/test_cluster.py

## ui: the Dagster UI on the same data home (http://127.0.0.1:3000)
ui: setup dagster-home
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

validate: $(VENV)/.installed dagster-home
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

## validate-deploy: the Celery and Kubernetes definitions (needs the deploy extra)
validate-deploy: $(VENV)/.deploy
	$(VENV)/bin/dagster definitions validate -m pipelines.cluster
	$(VENV)/bin/dagster definitions validate -m pipelines.k8s

## soak: crawls through Dagster against the local test server with random faults and SIGKILLs
## (expects 100% photos recovered, 0 duplicates, 0 re-requested pages, 0 stuck runs)
SOAK_ARGS ?= --trials 4
soak: $(VENV)/.installed
	$(PY) benchmarks/flickr_soak.py $(SOAK_ARGS)

## bench: the benchmarks that need nothing but the install (the Corel5k, representation, hybrid,
## scale and soak benchmarks need data or a subcommand: see their docstrings)
SELF_CONTAINED_BENCHMARKS := features_benchmark neighbour_search_benchmark paper1_benchmark paper2_benchmark preprocess_benchmark significance_benchmark
bench: $(VENV)/.installed
	for b in $(SELF_CONTAINED_BENCHMARKS); do echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py || exit 1; done
