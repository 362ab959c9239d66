# Roost — see README.md. `make test` is what CI runs.
SHELL   := /bin/bash
GO      ?= go
BIN     ?= $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/roost-mail/roost/version.Version=$(VERSION)
PKGS    := ./...

.PHONY: all build test test-deps lint unit bench demo clean

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/roostd ./cmd/nodectl ./cmd/faultfs

# Everything CI checks: the real services the tests need are installed and
# started by scripts/test-deps.sh (as root, Debian packages), then lint and
# every test with the race detector.
test: test-deps lint unit

test-deps:
	@scripts/test-deps.sh

lint:
	@echo "== gofmt"; out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	@echo "== go vet"; $(GO) vet $(PKGS)
	@echo "== go mod tidy"; cp go.mod /tmp/roost-go.mod.bak; cp go.sum /tmp/roost-go.sum.bak; $(GO) mod tidy; \
	  if ! cmp -s go.mod /tmp/roost-go.mod.bak || ! cmp -s go.sum /tmp/roost-go.sum.bak; then \
	    cp /tmp/roost-go.mod.bak go.mod; cp /tmp/roost-go.sum.bak go.sum; echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; fi

unit:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# Benchmarks and long measurements; not part of make test.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 5x -timeout 180m ./...

# A three-agent cluster on loopback; Ctrl-C stops it.
demo:
	@scripts/demo.sh

clean:
	rm -rf $(BIN) .demo
