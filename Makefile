# Roost — see README.md. `make test` is what CI runs.
SHELL   := /bin/bash
GO      ?= go
BIN     ?= $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/roost-mail/roost/version.Version=$(VERSION)
PKGS    := ./...
# The Dovecot that make demo and make ttr run: 2.3 (the host's, Debian 12)
# or 2.4 (Debian 13's, from the root scripts/dovecot24-root.sh makes).
DOVECOT ?= 2.3

.PHONY: all build test test-deps lint unit fuzz bench ttr mutate demo clean stage deb rpm packages

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/roostd ./cmd/nodectl ./cmd/faultfs

# Everything CI checks: the real services the tests need are installed and
# started by scripts/test-deps.sh (as root, Debian packages), then lint,
# then (scripts/check.sh) every package's tests with the race detector and
# every fuzz target for a few seconds, beside the cross-package tests.
test: test-deps lint
	@GO=$(GO) scripts/check.sh $(FUZZTIME)

test-deps:
	@scripts/test-deps.sh

lint:
	@echo "== gofmt"; out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	@echo "== go vet"; $(GO) vet $(PKGS) && $(GO) vet -tags manpages ./cmd/...
	@echo "== staticcheck"; $(GO) tool staticcheck $(PKGS)
	@echo "== go mod tidy"; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cp go.mod go.sum "$$tmp"/; \
	  $(GO) mod tidy || { cp "$$tmp"/go.mod "$$tmp"/go.sum .; echo "go mod tidy failed"; exit 1; }; \
	  if ! cmp -s go.mod "$$tmp"/go.mod || ! cmp -s go.sum "$$tmp"/go.sum; then \
	    cp "$$tmp"/go.mod "$$tmp"/go.sum .; echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; fi

# Every test, the cross-package ones too, with the race detector (slower
# than make test: tests/ alone takes over 20 minutes so).
unit:
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

# Every fuzz target for FUZZTIME (a crasher lands in the package's
# testdata/fuzz/ and fails the run).
FUZZTIME ?= 3s
fuzz:
	@scripts/fuzz.sh $(FUZZTIME)

# Benchmarks and long measurements; not part of make test.
bench: ttr
	$(GO) test -run '^$$' -bench . -benchtime 5x -timeout 180m ./...
	ROOST_SOAK=10m $(GO) test -count=1 -run '^TestLossyNetworkMovesAndFencesNobody$$' -timeout 30m ./tests/
	@scripts/fuzz.sh 2m

# Mutation check of the failover decision: every mutation must be killed.
mutate:
	@scripts/mutate.sh

# Time to recover on the whole mail cluster (root; the Debian packages of
# scripts/test-deps.sh): 10 fresh clusters per scenario, median and p95;
# then the partial partition in network namespaces (on 2.3). DOVECOT=2.4
# for Dovecot 2.4 nodes.
TTR_RUNS ?= 10
ttr: build test-deps
	$(GO) run ./tests/cmd/ttr -runs $(TTR_RUNS) -bin $(BIN) -dovecot $(DOVECOT)
	@scripts/ttr-partition.sh $(TTR_RUNS)

# Packages: make deb rpm (ARCH=amd64 or arm64); make packages does both
# architectures. The package version comes from git (v1.2.3 tags, else
# 0.0.0~git<date>.<hash>); every file is stamped with the last commit's
# time, so the same commit builds the same package.
ARCH       ?= amd64
STAGE      := $(CURDIR)/build/stage-$(ARCH)
PKGVERSION ?= $(shell scripts/pkgversion.sh)
DIST       ?= $(CURDIR)/dist
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)

stage:
	@rm -rf $(STAGE) && mkdir -p $(STAGE)/man $(STAGE)/completion/bash $(STAGE)/completion/zsh
	CGO_ENABLED=0 GOARCH=$(ARCH) $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS) -buildid=' -o $(STAGE)/ ./cmd/roostd ./cmd/nodectl ./cmd/faultfs
	@for c in roostd nodectl faultfs; do \
	  $(GO) run -tags manpages -ldflags '$(LDFLAGS)' ./cmd/$$c man $(STAGE)/man && \
	  $(GO) run ./cmd/$$c completion bash > $(STAGE)/completion/bash/$$c && \
	  $(GO) run ./cmd/$$c completion zsh > $(STAGE)/completion/zsh/_$$c || exit 1; \
	done
	@rm -f $(STAGE)/man/*-completion-*.1 && gzip -9n $(STAGE)/man/*.1
	@scripts/copyright.sh > $(STAGE)/copyright
	@scripts/changelog.sh $(PKGVERSION) | gzip -9n > $(STAGE)/changelog.Debian.gz

deb rpm: stage
	VERSION=$(PKGVERSION) ARCH=$(ARCH) STAGE=$(STAGE) $(GO) run ./packaging/build -format $@ -out $(DIST) -mtime $(SOURCE_DATE_EPOCH)

packages:
	$(MAKE) deb rpm ARCH=amd64
	$(MAKE) deb rpm ARCH=arm64

# The whole mail cluster on loopback (root: FUSE, Dovecot): three Dovecot
# nodes on a shared FUSE filesystem, HAProxy, three roostd; it breaks node2
# and shows the failover. Ctrl-C stops it. DEMO_DB=postgres for PostgreSQL,
# DOVECOT=2.4 for Dovecot 2.4 nodes.
DEMO_DB ?= sqlite
demo: build
	@scripts/test-deps.sh demo $(DEMO_DB) $(DOVECOT)
	@$(GO) run ./tests/cmd/demo -bin $(BIN) -db $(DEMO_DB) -dovecot $(DOVECOT)

clean:
	rm -rf $(BIN) .demo build dist
