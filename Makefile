# gkewi: GKE Workload Identity onboarding on Temporal.
#
#   make demo   a complete onboarding and revocation in the local sandbox
#   make test   every test (unit, workflow, emulator, control plane, end to end), after vet and lint
#   make bench  the benchmark against the sandbox (BENCH_FLAGS="--n 10,50")
#   make test-faults  the heavy fault tests
#
# The sandbox tools (Temporal CLI, etcd, Kubernetes control plane, kwok) and the
# checkers (workflowcheck, golangci-lint) are built from the Go module proxy at
# pinned versions into a per-user cache, once.

SHELL := /bin/bash
GO ?= go

CACHE_HOME ?= $(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME),$(HOME)/.cache)
TOOLS_DIR ?= $(CACHE_HOME)/gkewi/tools

TEMPORAL_CLI_VERSION := v1.5.1
ETCD_VERSION := v3.6.16
KUBERNETES_VERSION := v1.36.3
KWOK_VERSION := v0.8.0
WORKFLOWCHECK_VERSION := v0.6.0
GOLANGCI_LINT_VERSION := v2.15.0

TEMPORAL := $(TOOLS_DIR)/temporal-$(TEMPORAL_CLI_VERSION)/temporal
ETCD := $(TOOLS_DIR)/etcd-$(ETCD_VERSION)/etcd
KUBE_DIR := $(TOOLS_DIR)/kubernetes-$(KUBERNETES_VERSION)
KUBE_APISERVER := $(KUBE_DIR)/kube-apiserver
KUBE_CONTROLLER_MANAGER := $(KUBE_DIR)/kube-controller-manager
KUBE_SCHEDULER := $(KUBE_DIR)/kube-scheduler
KUBECTL := $(KUBE_DIR)/kubectl
KWOK_DIR := $(TOOLS_DIR)/kwok-$(KWOK_VERSION)
KWOK := $(KWOK_DIR)/kwok
WORKFLOWCHECK := $(TOOLS_DIR)/workflowcheck-$(WORKFLOWCHECK_VERSION)/workflowcheck
GOLANGCI_LINT := $(TOOLS_DIR)/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint

TOOL_BINARIES := $(TEMPORAL) $(ETCD) $(KUBE_APISERVER) $(KUBE_CONTROLLER_MANAGER) \
	$(KUBE_SCHEDULER) $(KUBECTL) $(KWOK) $(WORKFLOWCHECK)

# Every process started by the sandbox and the tests finds its tools here.
export GKEWI_TOOLS_DIR := $(TOOLS_DIR)
export GKEWI_TEMPORAL := $(TEMPORAL)
export GKEWI_ETCD := $(ETCD)
export GKEWI_KUBE_DIR := $(KUBE_DIR)
export GKEWI_KWOK := $(KWOK)
export GKEWI_KWOK_STAGES := $(KWOK_DIR)/stages.yaml

BIN := bin

.PHONY: all build tools demo test test-unit test-faults vet workflowcheck lint bench clean help

all: build

help:
	@sed -n '3,6p' Makefile

build:
	$(GO) build -o $(BIN)/ ./worker/cmd/gkewi-worker ./starter/cmd/gkewi ./sandbox/cmd/...

tools: $(TOOL_BINARIES) $(GKEWI_KWOK_STAGES)

$(TEMPORAL):
	@echo "building Temporal CLI $(TEMPORAL_CLI_VERSION) (cold: a few minutes)"
	GOBIN=$(@D) $(GO) install github.com/temporalio/cli/cmd/temporal@$(TEMPORAL_CLI_VERSION)

$(ETCD):
	@echo "building etcd $(ETCD_VERSION)"
	cd sandbox/tools/etcd && $(GO) build -o $@ go.etcd.io/etcd/server/v3

# Built outside the Kubernetes repository the binaries would report version
# v0.0.0-master, which Helm's kubeVersion checks and gkewi's preflight refuse: stamp
# the real version in. The stamp file marks binaries built that way.
KUBE_VERSION_PKGS := k8s.io/component-base/version k8s.io/client-go/pkg/version
KUBE_MINOR := $(word 2,$(subst ., ,$(KUBERNETES_VERSION)))
KUBE_LDFLAGS := $(foreach p,$(KUBE_VERSION_PKGS),-X $(p).gitVersion=$(KUBERNETES_VERSION) \
	-X $(p).gitMajor=1 -X $(p).gitMinor=$(KUBE_MINOR) -X $(p).gitTreeState=clean)
KUBE_STAMP := $(KUBE_DIR)/.version-stamped

# One go build for the four control-plane binaries shares the compile cache.
$(KUBE_APISERVER) $(KUBE_CONTROLLER_MANAGER) $(KUBE_SCHEDULER) $(KUBECTL): $(KUBE_STAMP)

$(KUBE_STAMP):
	@echo "building Kubernetes $(KUBERNETES_VERSION) control plane (cold: about 10 minutes)"
	mkdir -p $(KUBE_DIR)
	cd sandbox/tools/kubernetes && $(GO) build -ldflags '$(KUBE_LDFLAGS)' -o $(KUBE_DIR)/ \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
	touch $@

$(KWOK):
	@echo "building kwok $(KWOK_VERSION)"
	GOBIN=$(@D) $(GO) install sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)

# kwok's own "fast" stages for nodes and pods, taken from the module at the same version.
$(GKEWI_KWOK_STAGES): $(KWOK)
	dir=$$($(GO) mod download -json sigs.k8s.io/kwok@$(KWOK_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	  test -n "$$dir" || { echo "cannot locate sigs.k8s.io/kwok@$(KWOK_VERSION) in the module cache" >&2; exit 1; }; \
	  for f in $$dir/kustomize/stage/node/fast/*.yaml $$dir/kustomize/stage/pod/fast/*.yaml; do \
	    case $$f in */kustomization.yaml) continue;; esac; echo '---'; cat $$f; done > $@.tmp && mv $@.tmp $@

$(WORKFLOWCHECK):
	GOBIN=$(@D) $(GO) install go.temporal.io/sdk/contrib/tools/workflowcheck@$(WORKFLOWCHECK_VERSION)

vet:
	$(GO) vet ./...

workflowcheck: $(WORKFLOWCHECK)
	$(WORKFLOWCHECK) ./workflows/...

$(GOLANGCI_LINT):
	@echo "building golangci-lint $(GOLANGCI_LINT_VERSION) (cold: about 5 minutes)"
	GOBIN=$(@D) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# The linters and rules are in .golangci.yml.
lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

test-unit: vet workflowcheck lint
	$(GO) test -count=1 ./...

test: tools vet workflowcheck lint
	$(GO) test -count=1 -timeout 45m ./...

# make demo DEMO_FLAGS=--keep leaves the sandbox running afterwards.
DEMO_FLAGS ?=
BENCH_FLAGS ?=

# Only the fault tests (also part of make test): the worker killed in every
# step, Temporal restarted, 50 onboardings under API faults, 100 grants on one
# GSA, 20 onboardings on one cluster (about 10 minutes).
test-faults: tools
	$(GO) test -count=1 -timeout 40m -run TestFault ./tests/

demo: tools build
	$(BIN)/gkewi-sandbox demo $(DEMO_FLAGS)

bench: tools build
	$(BIN)/gkewi-sandbox bench $(BENCH_FLAGS)

clean:
	rm -rf $(BIN) .sandbox
