# Tandem — build, run and test entry points. `make help` lists them.

CARGO ?= cargo
# The local platform builds with the `local` profile (optimised, quick to build) and without the
# Kubernetes client and OTLP exporter; FULL=1 builds them in, as the container image does.
# Container images and benchmarks use `release`; the tests use the debug (`dev`) binaries.
PROFILE ?= local
BIN_DIR := target/$(if $(filter dev test,$(PROFILE)),debug,$(PROFILE))
LOCAL_FEATURES := $(if $(FULL),,--no-default-features)
# The debug binaries the end-to-end and chart tests run, with the end-to-end test binary. Every
# cargo command of the tests selects the whole workspace with its dev-dependencies (a test target
# here, --all-targets in lint), so cargo resolves one feature set and compiles each dependency
# once; `--bins` alone or `-p`/`--exclude` would resolve another and compile dozens again.
DEBUG_BINS := --workspace --bins --test e2e

.PHONY: help run build build-local build-debug test test-unit test-e2e test-chart e2e lint fmt crds chart-crds deps load bench-deps bench-sip bench-ratedeck bench-media clean build-deps

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: build-deps ## Build every binary with every feature (PROFILE=local|release|dev)
	$(CARGO) build --workspace --bins --profile $(PROFILE)

build-local: build-deps ## Build the two binaries of the local platform (FULL=1: with Kubernetes and OTLP)
	@echo "building signaling-pod and media-pod: profile $(PROFILE), $(if $(FULL),every feature,without the kubernetes and otlp features (FULL=1 adds them)); about 3¼ minutes on 2 cores the first time"
	$(CARGO) build -p signaling-pod -p media-pod --profile $(PROFILE) $(LOCAL_FEATURES)

run: build-local ## Start the local platform in the foreground from examples/local/ (Ctrl-C stops it)
	@TANDEM_BIN_DIR=$(BIN_DIR) scripts/run-local

deps: build-deps ## Install what the tests use, when missing (SIPp, Prometheus, cargo-nextest, Python tools)
	scripts/install-test-deps

build-debug: build-deps ## Build the debug binaries and the end-to-end test binary (what test-e2e and test-chart run)
	$(CARGO) build $(DEBUG_BINS) $(CARGO_FLAGS)

build-deps: ## Install what the build links against, when missing (libopus-dev)
	@scripts/install-build-deps

test: ## Run every test: lint, unit, integration, end-to-end (SIPp), chart and Prometheus (phases overlap)
	CARGO='$(CARGO)' scripts/test-all

test-unit: ## Unit and integration tests of every crate (the end-to-end harness's own included), crates in parallel (cargo-nextest), and doc tests
	@$(CARGO) nextest --version >/dev/null 2>&1 || { echo "cargo-nextest is missing: run 'make deps'" >&2; exit 1; }
	$(CARGO) nextest run --workspace -E 'not binary_id(tandem-e2e::e2e)' --no-fail-fast
	$(CARGO) test --workspace --doc

test-e2e: build-debug ## End-to-end tests: the local platform against real SIPp and Kamailio peers (each test in its own network namespace)
	CARGO='$(CARGO)' scripts/test-e2e

test-chart: build-debug ## Helm chart, dashboards, alerts; a real Prometheus against the local platform (contract ports)
	charts/tests/run

e2e: ## Operator end-to-end tests on a kind cluster (needs docker, kind, kubectl)
	operator/e2e/run-kind

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

load: ## Place CALLS calls at RATE per second through a running `make run` (SIPp, installed when missing)
	@scripts/install-test-deps sipp
	scripts/sipp-load $(or $(CALLS),1000) $(or $(RATE),100)

bench-deps: ## Install the benchmarks' peers when missing (Kamailio, rtpengine, SIPp)
	bench/install-deps

bench-sip: bench-deps bench-ratedeck ## Calls/s: Kamailio, Kamailio + rtpengine, Tandem side by side, after the rate deck figures (RUNS=3, QUICK=1; root; not in `make test`)
	$(CARGO) build --release -p signaling-pod -p media-pod
	RUNS='$(RUNS)' QUICK='$(QUICK)' MEMORY_ONLY='$(MEMORY_ONLY)' ENGINES='$(ENGINES)' RATES='$(RATES)' python3 bench/sip/bench_sip.py --bin-dir target/release

bench-ratedeck: ## Rate deck of 1,000,000 prefixes: load time, bytes per prefix, lookup time (not in `make test`)
	$(CARGO) run --release -p bench-ratedeck

crds: ## Regenerate crds/*.yaml (and the chart's copy) from the Rust types
	$(CARGO) run -q -p tandem-api --bin crdgen -- crds
	$(MAKE) chart-crds

chart-crds: ## Copy crds/*.yaml into the Helm chart
	cp crds/*.yaml charts/tandem/crds/

bench-media: ## RTP relay benchmark: media-pod vs rtpengine vs a raw forwarder, side by side (root; QUICK=1 smoke run)
	$(CARGO) build --release -p media-pod -p bench-media
	BIN_DIR=target/release bench/media/run
	@echo "transcoding cost of media-pod's codec path (rtpengine's transcoding is not measured yet):"
	$(CARGO) run --release -q -p tandem-codec --example transcode_throughput

clean: ## Remove build output
	$(CARGO) clean
