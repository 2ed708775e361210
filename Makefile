# crs — build, run and test. `make run` and `make test` are all a newcomer needs.
SHELL := /bin/bash
GO ?= go
BUF := $(GO) tool -modfile=tools/buf.mod buf
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# grpcnotrace keeps golang.org/x/net/trace (and with it html/template) out of the binary: template's
# reflect.MethodByName would make the linker keep every exported method, ~11 MB of dead code that an
# idle worker partly maps. Every build of cmd/crs should pass it (Dockerfile, e2e harness do).
BUILDTAGS := grpcnotrace
BIN := bin

.PHONY: all build run generate check-generated lint test test-short bench deps clean smoke-claude-code

all: build

## build: the static crs binary plus the mock upstream and the bench driver, in ./bin
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(BUILDTAGS) -ldflags '$(LDFLAGS)' -o $(BIN)/crs ./cmd/crs
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/crs-mock ./cmd/crs-mock
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/crs-bench ./cmd/crs-bench

## run: build and start the all-in-one relay (control plane + one worker) on the embedded store in ./data
run: build
	./$(BIN)/crs dev -data-dir ./data

## generate: regenerate gen/ from proto/ with buf and local plugins (offline)
generate:
	$(BUF) lint
	$(BUF) generate
	cp gen/admin.swagger.json controlplane/adminhttp/openapi.json

## check-generated: fail if gen/ is not what proto/ generates
check-generated: generate
	@git diff --exit-code --stat -- gen controlplane/adminhttp/openapi.json || \
	  (echo "gen/ is stale: run 'make generate' and commit the result" >&2; exit 1)
	@test -z "$$(git status --porcelain -- gen)" || \
	  (echo "gen/ has untracked generated files: run 'make generate' and commit them" >&2; git status --porcelain -- gen; exit 1)

## lint: buf lint, gofmt, go vet
lint:
	$(BUF) lint
	@fmt=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
	  if [ -n "$$fmt" ]; then echo "gofmt needed:"; echo "$$fmt"; exit 1; fi
	$(GO) vet ./...

## deps: install what the tests need that Go does not bring (redis-server)
deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (tests start their own throwaway instances)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) || \
	  echo "WARNING: could not install redis-server; Redis tests will skip (and fail under CI=true)"; }

## test: everything: generated code current, lint, and the whole suite with the race detector
test: deps check-generated lint
	$(GO) test -race -count=1 -timeout 20m ./...

## test-short: quick loop, skips process-level integration tests
test-short:
	$(GO) test -short -count=1 ./...

# Three alternating rounds of 5 s per target: a slow spell of a shared machine lands on both sides.
BENCHFLAGS ?= -rounds 3 -d 5s

## bench: mock upstream, control plane and worker; load direct vs through crs; prints the ratio
bench: build
	./$(BIN)/crs-bench -crs ./$(BIN)/crs -mock ./$(BIN)/crs-mock $(BENCHFLAGS)

clean:
	rm -rf $(BIN)

## smoke-claude-code: opt-in, the real Claude Code CLI (npm) answers through crs against the mock
smoke-claude-code: build
	bash deploy/smoke/claude-code.sh
