# pktlb: every target installs what it needs (Debian packages as root, Python packages into .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PKTLB := $(VENV)/bin/pktlb
# Debian packages the lab, tests, demo and benchmarks use.  haproxy and bird2 only ever run inside lab
# namespaces (started by the lab supervisor): `make deps` installs them behind a policy-rc.d that starts
# no daemon in the root namespace (an existing policy-rc.d, such as Docker's, is left as it is).
DEBS := iproute2 nftables ethtool iputils-ping curl iperf3 wrk tcpdump python3-venv python3-dev gcc procps util-linux kmod apache2-utils hping3 chromium bird2 haproxy clang llvm libbpf-dev linux-libc-dev bpftool
PYTEST_ARGS ?=

.PHONY: all deps venv test unit labtest lint demo bench fuzz clean lab-clean fastpath

all: test

deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run as root to install)"; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\n# pktlb make deps: start no system daemon (haproxy, bird) while installing\nexit 101\n' \
	      > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1; \
	  fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; rc=$$?; \
	  if [ -n "$$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$rc; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed fastpath

# The kernel fast path (pktlb/fastpath/*.c): an eBPF object built with Debian's clang and libbpf-dev
# into build/ (git-ignored).  Without clang it is skipped with a message; the engine then runs without it.
BPF_OBJ := build/fastpath/fastpath.bpf.o build/fastpath/pass.bpf.o
BPF_SRC := $(wildcard pktlb/fastpath/*.c pktlb/fastpath/*.h)
BPF_CFLAGS := -O2 -g -target bpf -mcpu=v3 -Wall -Werror
fastpath:
	@if command -v clang >/dev/null 2>&1 && [ -e /usr/include/bpf/bpf_helpers.h ]; then \
	  $(MAKE) --no-print-directory $(BPF_OBJ); \
	else echo "fastpath: clang or libbpf-dev missing, the kernel fast path is not built (run make deps as root)"; fi

build/fastpath/%.bpf.o: pktlb/fastpath/%.bpf.c $(BPF_SRC)
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -I/usr/include/$$(gcc -dumpmachine) -c $< -o $@

lint: venv
	$(VENV)/bin/ruff check pktlb tests scripts
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest -m 'not lab' $(PYTEST_ARGS)

labtest: deps venv
	$(PY) -m pytest -m lab $(PYTEST_ARGS)

# --durations: CI's log names the slowest tests (the whole run must stay under about 25 minutes on 2 cores).
# The unit part is CPU-bound and its tests share no files or fixed ports: it runs on UNIT_WORKERS
# processes (pytest-xdist); the lab part (namespaces, timing-sensitive traffic) runs serially after it.
# Exit status 5 (PYTEST_ARGS selected no test of that part) is not a failure.
UNIT_WORKERS ?= 2
test: deps venv lint
	$(PY) -m pytest -m 'not lab' -n $(UNIT_WORKERS) --durations=40 $(PYTEST_ARGS) || [ $$? = 5 ]
	$(PY) -m pytest -m lab --durations=40 $(PYTEST_ARGS) || [ $$? = 5 ]

demo: deps venv
	scripts/demo.sh

bench: deps venv
	$(PKTLB) bench --workers 1,2 --profile --memory --out build/bench

fuzz: venv
	$(PY) -m pip install -q -e '.[fuzz]'
	$(PY) scripts/fuzz_datapath.py -atheris_runs=200000

lab-clean: venv
	$(PKTLB) lab down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
