# iotauth — the front door. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BUILD := build
PLUGIN := $(BUILD)/mosquitto-iotauth.so
PLUGIN_TESTHOOKS := $(BUILD)/mosquitto-iotauth-testhooks.so
BIN := $(BUILD)/iotauth
# Go's build cache does not see edits to c/*.c included from plugin/shim.c: fold their hash into
# CGO_CFLAGS so that any change to the shim rebuilds the plugin.
SHIM_HASH := $(shell cat c/* 2>/dev/null | sha256sum | cut -c1-16)
export CGO_CFLAGS := -O2 -g -DIOTAUTH_SHIM_HASH=$(SHIM_HASH)
GO_SOURCES := $(shell find . -name '*.go' -not -path './build/*' -not -path '*/node_modules/*') go.mod go.sum $(wildcard c/*) $(wildcard backend/migrations/sql/*.sql)
# The /live page (web/live): its files are embedded in iotauth, MQTT.js's browser bundle among them,
# which npm installs from the pinned package-lock.json (no CDN) and which is git-ignored.
LIVE := web/live
LIVE_BUNDLE := $(LIVE)/static/vendor/mqtt.min.js
LIVE_ASSETS := $(wildcard $(LIVE)/static/*.*)
# axe-core (a dev dependency in the same package.json): the browser tests inject it to check the
# console's accessibility; it is never embedded or served.
AXE := $(LIVE)/node_modules/axe-core/axe.min.js
TEST_TIMEOUT ?= 12m
# `iotauth version` prints it (the Go toolchain does not stamp VCS data in every checkout, e.g. worktrees).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Extra flags for the benchmark tool, e.g. make bench BENCH_FLAGS='-metrics -only connect,storm'.
# GOAUTH_SO=/path/to/go-auth.so (environment or make variable) adds mosquitto-go-auth to the comparison
# brokers (docs/benchmarks.md says how to build it).
BENCH_FLAGS ?=
TEST_ENV = IOTAUTH_PLUGIN=$(CURDIR)/$(PLUGIN) IOTAUTH_PLUGIN_TESTHOOKS=$(CURDIR)/$(PLUGIN_TESTHOOKS) IOTAUTH_BIN=$(CURDIR)/$(BIN)
# make test-compat: the brokers built from ../shared/mosquitto (beside the repo, in CI too) into
# build/mosquitto-VERSION/. 2.1 is the build whose main loop sleeps until the next event, as 2.1 does
# without libwebsockets: it is the one that needs the plugin to ask for TICKs. One plugin build serves
# every version (plugin API v5; the headers of Debian's 2.0.11 suffice).
MOSQUITTO_SRC ?= $(CURDIR)/../shared/mosquitto
COMPAT_VERSIONS ?= 2.0.20 2.1-dev-dd2c25c-nextevent
COMPAT_BROKERS := $(foreach v,$(COMPAT_VERSIONS),$(BUILD)/mosquitto-$(v)/sbin/mosquitto)
# The API tests that start a broker (newEnv(..., withBroker)); the others do not depend on its version.
COMPAT_API_TESTS := TestEndToEndRevocationKicks|TestRestrictedModeMatrix|TestDeviceLimitWithSignedLicense
# make deb: the Debian package (docs/packaging.md), versioned from git describe by scripts/deb/version.sh.
DEB_VERSION ?= $(shell scripts/deb/version.sh 2>/dev/null)
DEB := $(BUILD)/iotauth_$(DEB_VERSION)_$(shell dpkg --print-architecture 2>/dev/null || echo amd64).deb

.PHONY: help deps build test test-compat test-c test-containers demo bench lint clean deb test-deb

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

deps: ## install mosquitto, its headers and clients, PostgreSQL and jq when missing (root or sudo)
	@scripts/deps.sh

build: $(PLUGIN) $(PLUGIN_TESTHOOKS) $(BIN) ## build the plugin and the iotauth binary into build/

$(PLUGIN): $(GO_SOURCES)
	@mkdir -p $(BUILD)
	$(GO) build -buildmode=c-shared -o $@ ./plugin
	@rm -f $(BUILD)/mosquitto-iotauth.h

$(PLUGIN_TESTHOOKS): $(GO_SOURCES)
	@mkdir -p $(BUILD)
	$(GO) build -tags iotauth_testhooks -buildmode=c-shared -o $@ ./plugin
	@rm -f $(BUILD)/mosquitto-iotauth-testhooks.h

$(BIN): $(GO_SOURCES) $(LIVE_ASSETS) $(LIVE_BUNDLE)
	@mkdir -p $(BUILD)
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $@ ./cmd/iotauth

$(LIVE_BUNDLE): $(LIVE)/package.json $(LIVE)/package-lock.json
	cd $(LIVE) && npm ci --no-audit --no-fund --loglevel=error
	cp $(LIVE)/node_modules/mqtt/dist/mqtt.min.js $@

# npm ci above installs it too; this rule runs it for a tree whose bundle predates axe-core.
$(AXE): $(LIVE_BUNDLE)
	@[ -f $@ ] || { cd $(LIVE) && npm ci --no-audit --no-fund --loglevel=error; }

test: deps build $(AXE) test-c ## run every test: unit, integration and end to end (starts its own PostgreSQL and Mosquitto)
	$(TEST_ENV) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

test-compat: build $(COMPAT_BROKERS) ## the plugin, demo and broker-using API tests against Mosquitto 2.0.20 and 2.1
	@set -e; for v in $(COMPAT_VERSIONS); do \
		echo "== Mosquitto $$v"; \
		export IOTAUTH_MOSQUITTO=$(CURDIR)/$(BUILD)/mosquitto-$$v/sbin/mosquitto; \
		tags=""; case $$v in 2.1*) tags="-tags mosquitto21";; esac; \
		$(TEST_ENV) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$tags ./test/plugin ./test/demo; \
		$(TEST_ENV) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '^($(COMPAT_API_TESTS))$$' ./test/api; \
		$(TEST_ENV) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '^TestKeepaliveAndLostConnectionReasons$$' ./test/presence; \
	done

# The compose stack started for real (Podman, docker-compose through Podman's socket): test/containers,
# docs/containers.md. Root only; images and base images stay cached in IOTAUTH_CONTAINERS_CACHE.
test-containers: build ## docker/compose.yaml run with Podman: health, TLS/WSS agents, kicks, restarts, no leaks (root)
	@scripts/containers-deps.sh
	MOSQUITTO_SRC=$(MOSQUITTO_SRC) $(TEST_ENV) $(GO) test -count=1 -timeout 45m -tags containers -v ./test/containers

# Built once and reused (build.sh installs its build dependencies with apt when run as root).
$(BUILD)/mosquitto-%/sbin/mosquitto:
	$(MOSQUITTO_SRC)/build.sh $* $(CURDIR)/$(BUILD)/mosquitto-$*

deb: $(LIVE_BUNDLE) ## build/iotauth_VERSION_ARCH.deb: plugin, iotauth, systemd unit (docs/packaging.md)
	@[ -n "$(DEB_VERSION)" ] || { scripts/deb/version.sh; exit 1; }
	@scripts/deb/deps.sh build
	scripts/deb/build.sh $(DEB_VERSION) $(DEB)

test-deb: deps deb ## install the package into a throwaway Debian root: broker, agent, lintian, remove, purge
	@scripts/deb/deps.sh test
	$(TEST_ENV) IOTAUTH_DEB=$(CURDIR)/$(DEB) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -tags debpkg ./test/deb

test-c: ## the C shim's own unit tests (the mark table), with AddressSanitizer
	@mkdir -p $(BUILD)
	$(CC) -O1 -g -Wall -Wextra -Werror -fsanitize=address,undefined -fno-sanitize-recover=all \
		-o $(BUILD)/iotauth_marks_test c/iotauth_marks.c c/iotauth_marks_test.c
	$(BUILD)/iotauth_marks_test

demo: deps build ## start PostgreSQL + Mosquitto with the plugin, create an agent and show a round trip
	@scripts/demo.sh

bench: deps build ## benchmark the plugin against Mosquitto without auth; prints ratios, writes build/bench.md
	IOTAUTH_PLUGIN=$(CURDIR)/$(PLUGIN) $(GO) run ./test/bench/cmd/iotauth-bench -out $(BUILD)/bench.md $(BENCH_FLAGS)

lint: ## gofmt, go vet, and staticcheck when installed
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed; skipped"; fi

clean: ## remove build outputs
	rm -rf $(BUILD) $(LIVE_BUNDLE) $(LIVE)/node_modules
