# rrjax developer targets. Every target runs inside .venv, created by `make setup`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup test test-slow demo smoke bench-depthwise clean

setup: $(VENV)/.installed
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	      || echo "warning: could not install dataset-fashion-mnist; fashion_mnist_local falls back to TFDS fashion_mnist"; \
	  else \
	    echo "warning: not root, skipping dataset-fashion-mnist; fashion_mnist_local falls back to TFDS fashion_mnist"; \
	  fi; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest -q

# The embedded default: EfficientNet-Lite0 + Fashion-MNIST, offline (see README).
demo: setup
	$(PY) -m rrjax.main --config=configs/demo.py --workdir=runs/demo
	@cat runs/demo/report.md

smoke: setup
	$(PY) -m rrjax.main --config=configs/demo.py:smoke --workdir=runs/smoke

test-slow: setup
	$(PY) -m pytest -q -m slow

bench-depthwise: setup
	$(PY) benchmarks/depthwise.py

clean:
	rm -rf $(VENV) build *.egg-info
