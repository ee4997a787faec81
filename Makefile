# apinode: the two commands are `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXAMPLE_DIR := examples/fraud
EXAMPLE_PKG := build/fraud.apz
DATA_DIR    ?= build/data
PROTOS := $(wildcard proto/apinode/v1/*.proto) $(wildcard proto/inference/*.proto)
JOBS ?= 2

# The container image (Dockerfile): podman if it is there, else docker.
IMAGE      ?= apinode:0.1.0
BASE_IMAGE ?= python:3.11-slim
CONTAINER  ?= $(shell command -v podman || command -v docker)

.PHONY: run test check fmt proto bench example clean venv image

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (apinode needs Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Regenerate the gRPC stubs from proto/ into node/_proto (committed; never edit by hand).
proto: $(STAMP)
	$(BIN)/python -m node._proto_gen

example: $(STAMP)
	$(BIN)/python $(EXAMPLE_DIR)/train.py

$(EXAMPLE_PKG): $(STAMP) $(wildcard $(EXAMPLE_DIR)/*.py) $(wildcard $(EXAMPLE_DIR)/*.yaml)
	$(BIN)/python $(EXAMPLE_DIR)/train.py
	$(BIN)/apinode compile $(EXAMPLE_DIR) -o $(EXAMPLE_PKG)

# More `apinode serve` options, e.g. make run SERVE_ARGS='--http-port 0 --grpc-port 0' (tests/readme does).
SERVE_ARGS ?=

run: $(EXAMPLE_PKG)
	$(BIN)/apinode serve --data-dir $(DATA_DIR) $(SERVE_ARGS) --print-usage $(EXAMPLE_PKG)

check: $(STAMP)
	$(BIN)/ruff check apz node compiler deployer loadtest tests examples
	$(BIN)/ruff format --check apz node compiler deployer loadtest tests examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

fmt: $(STAMP)
	$(BIN)/ruff format apz node compiler deployer loadtest tests examples
	$(BIN)/ruff check --fix apz node compiler deployer loadtest tests examples

# --dist loadscope: each test module runs whole on one worker, so a module's node (a module-scoped
# fixture) starts once and its tests keep their order (tests/readme plays the README's deploy
# commands in sequence). Not loadgroup: with pytest 9.2 and xdist 3.8 it spread the tests of one
# xdist_group over both workers (seen: the readme module's deploy tests split, rollback failing).
test: $(STAMP)
	$(MAKE) check
	bash tests/setup_services.sh
	$(BIN)/python -m pytest -n $(JOBS) --dist loadscope -q -p no:cacheprovider

image:
	@test -n "$(CONTAINER)" || { echo "error: make image needs podman or docker"; exit 1; }
	$(CONTAINER) build --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

bench: $(STAMP)
	bash loadtest/install_tools.sh
	$(BIN)/python -m loadtest.bench

clean:
	rm -rf build .pytest_cache .mypy_cache
