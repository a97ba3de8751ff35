# hybridgpu — developer entry points. Every target installs what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help venv lock crds lint typecheck unit test demo prometheus-install image image-tools

help:
	@echo "make demo          local cluster + stand-in networks + operator, with example jobs"
	@echo "make test          the whole suite (lint, types, unit, contract, end-to-end)"
	@echo "make cluster-up    start the local control plane (built once, cached in ~/.cache/hybridgpu)"
	@echo "make cluster-down  stop everything started here"
	@echo "make crds          regenerate crds/ from the pydantic models"
	@echo "make lock          re-resolve uv.lock (UV_LOCK_ARGS=--upgrade to take new releases)"
	@echo "make image         build the operator image, dist/hybridgpu-<version>.oci.tar (no Docker)"

# The venv holds exactly the locked set (requirements/dev.txt, exported from uv.lock, with
# hashes), then the project itself, editable, without resolving anything.
$(BIN)/.installed: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(BIN)/.installed

include hack/cluster.mk

# The lock: uv.lock is the resolution; requirements/*.txt are pip-installable views of it
# (runtime: the image and the Dockerfile; dev: the venv and CI).
UV_LOCK_ARGS ?=
lock: venv
	$(BIN)/uv lock $(UV_LOCK_ARGS)
	hack/export-requirements.sh

# The operator image as an OCI archive, from Debian packages and the locked wheels:
# dist/hybridgpu-<version>.oci.tar, its SBOM, and dist/image.json (its reference).
# `make image` always builds; `make test` rebuilds only when an input changed.
IMAGE_INPUTS := $(shell git ls-files --cached --others --exclude-standard -- operator \
  requirements/runtime.txt pyproject.toml README.md LICENSE hack/build-image.sh \
  hack/image_sbom.py 2>/dev/null)
image: venv image-tools
	hack/build-image.sh

dist/image.json: $(IMAGE_INPUTS) | venv image-tools
	hack/build-image.sh

# Debian's tools to build (mmdebstrap, umoci), run (bubblewrap) and push (skopeo) the image,
# and a registry (distribution) on loopback that the push test pushes to (RUNLEVEL=1: its
# package's service is not started; the test runs its own).
IMAGE_TOOLS := mmdebstrap umoci bubblewrap skopeo docker-registry
image-tools:
	@command -v mmdebstrap >/dev/null && command -v umoci >/dev/null && \
	  command -v bwrap >/dev/null && command -v skopeo >/dev/null && \
	  command -v docker-registry >/dev/null || { apt-get update -qq && \
	  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_TOOLS); }

crds: venv
	$(BIN)/hybridgpu crds --write crds
	hack/sync-chart-crds.sh

lint: venv
	$(BIN)/ruff check operator tests hack
	$(BIN)/ruff format --check operator tests hack

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

demo: venv cluster-up prometheus-install seaweedfs
	hack/demo.sh

demo-down:
	-for p in .local/pids/{operator,standins,dcgm-exporter,demo-nodes}.pid; do [ -f $$p ] && kill $$(cat $$p) 2>/dev/null; rm -f $$p; done
	-hack/prometheus.sh stop
	-hack/seaweedfs.sh stop

# Debian's Prometheus: the telemetry tests and the demo scrape real endpoints with it.
prometheus-install:
	@command -v prometheus >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

# The whole suite. End-to-end tests start the control plane (and Prometheus) themselves; the
# image tests and the chart's install run the image built here.
test: venv controlplane prometheus-install helm seaweedfs dist/image.json nosana-client
	$(MAKE) lint typecheck
	HYBRIDGPU_NOSANA_API_DIR=$(NOSANA_API_DIR) $(BIN)/pytest -q $(PYTEST_ARGS)

# Nosana's official client (@nosana/api, types generated from Nosana's production swagger),
# which the contract tests drive against the Nosana stand-in: npm, once, into the cache.
NOSANA_API_VERSION := 2.1.8
NOSANA_API_DIR := $(HOME)/.cache/hybridgpu/nosana-api/$(NOSANA_API_VERSION)
.PHONY: nosana-client
nosana-client:
	@test -d $(NOSANA_API_DIR)/node_modules/@nosana/api || { \
	  command -v npm >/dev/null || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; }; \
	  mkdir -p $(NOSANA_API_DIR) && \
	  npm install --silent --no-audit --no-fund --prefix $(NOSANA_API_DIR) @nosana/api@$(NOSANA_API_VERSION); }

# SeaweedFS's `weed` (Apache-2.0), built once from the pinned Go module (hack/seaweedfs) into
# ~/.cache/hybridgpu: the real S3-compatible result store of the tests and the demo.
.PHONY: seaweedfs
seaweedfs:
	hack/build-seaweedfs.sh

# The real helm, built once from the pinned Go module (hack/helm) into ~/.cache/hybridgpu.
.PHONY: helm
helm:
	hack/build-helm.sh
