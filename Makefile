# Tandem — build, run and test entry points. `make help` lists them.

CARGO ?= cargo
PROFILE ?= release
BIN_DIR := target/$(if $(filter release,$(PROFILE)),release,debug)
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)

.PHONY: help run build build-local test test-unit test-e2e test-chart e2e lint fmt crds chart-crds deps load bench-deps bench-sip bench-media clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## Build every binary (PROFILE=release|debug)
	$(CARGO) build --workspace --bins $(CARGO_PROFILE_FLAG)

build-local: ## Build the two binaries of the local platform
	$(CARGO) build -p signaling-pod -p media-pod $(CARGO_PROFILE_FLAG)

run: build-local ## Start the local platform in the foreground from examples/local/ (Ctrl-C stops it)
	TANDEM_BIN_DIR=$(BIN_DIR) scripts/run-local

deps: ## Install the real peers the tests use, when missing (SIPp)
	scripts/install-test-deps

test: deps lint test-unit test-e2e test-chart ## Run every test: lint, unit, integration, end-to-end (SIPp), chart and Prometheus

test-unit: ## Unit and integration tests of every crate
	$(CARGO) test --workspace --exclude tandem-e2e

test-e2e: ## End-to-end tests: the local platform against real SIPp peers (serial: contract ports)
	$(CARGO) build --workspace --bins
	TANDEM_BIN_DIR=target/debug $(CARGO) test -p tandem-e2e -- --test-threads=1
	# Needs root (network namespace, iptables): ignored in a plain `cargo test`.
	TANDEM_BIN_DIR=target/debug $(CARGO) test -p tandem-e2e --test media_loss -- --ignored

test-chart: ## Helm chart, dashboards, alerts; a real Prometheus against the local platform (contract ports)
	$(CARGO) build --workspace --bins
	charts/tests/run

e2e: ## Operator end-to-end tests on a kind cluster (needs docker, kind, kubectl)
	operator/e2e/run-kind

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

load: deps ## Place CALLS calls at RATE per second through a running `make run` (SIPp)
	scripts/sipp-load $(or $(CALLS),1000) $(or $(RATE),100)

bench-deps: ## Install the benchmarks' peers when missing (Kamailio, rtpengine, SIPp)
	bench/install-deps

bench-sip: bench-deps ## Calls/s: Kamailio, Kamailio + rtpengine, Tandem side by side (RUNS=3, QUICK=1; root; not in `make test`)
	$(CARGO) build --release -p signaling-pod -p media-pod
	RUNS='$(RUNS)' QUICK='$(QUICK)' ENGINES='$(ENGINES)' RATES='$(RATES)' python3 bench/sip/bench_sip.py --bin-dir target/release

crds: ## Regenerate crds/*.yaml (and the chart's copy) from the Rust types
	$(CARGO) run -q -p tandem-api --bin crdgen -- crds
	$(MAKE) chart-crds

chart-crds: ## Copy crds/*.yaml into the Helm chart
	cp crds/*.yaml charts/tandem/crds/

bench-media: ## RTP relay benchmark: media-pod vs rtpengine vs a raw forwarder, side by side (root; QUICK=1 smoke run)
	$(CARGO) build -p media-pod -p bench-media $(CARGO_PROFILE_FLAG)
	BIN_DIR=$(BIN_DIR) bench/media/run

clean: ## Remove build output
	$(CARGO) clean
