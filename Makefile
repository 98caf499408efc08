# Set-up and the everyday commands. `make quickstart` and `make test` create ./.venv with every
# dependency from requirements.txt when it is missing (or older than requirements.txt);
# `make test-jax` likewise creates ./.venv-jax from requirements-jax.txt (Keras and JAX, no
# TensorFlow) and runs the tests marked `jax` there under KERAS_BACKEND=jax.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
VENV_JAX := .venv-jax
STAMP_JAX := $(VENV_JAX)/.requirements-installed

.PHONY: quickstart test test-fast test-jax bench bazel-test venv clean

venv: $(STAMP)

# $(call virtualenv,DIR,REQUIREMENTS): DIR/.requirements-installed, made by installing
# REQUIREMENTS into the virtual environment DIR (created if missing).
define virtualenv
$(1)/.requirements-installed: $(2)
	test -x $(1)/bin/python || $$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(1)/bin/python -m pip install --disable-pip-version-check -q -r $(2)
	touch $$@
endef

$(eval $(call virtualenv,$(VENV),requirements.txt))
$(eval $(call virtualenv,$(VENV_JAX),requirements-jax.txt))

# The quickstart is the binaries' everyday sequence: pretrain SupCon and cross-entropy, export the
# untrained initial weights (--train_steps=0), probe the three with linear_eval, then a report
# (table, loss.png, tsne.png in runs/quickstart). --overwrite replaces only a run directory that
# holds another configuration; a finished run of the same flags is reused (rm -rf runs/quickstart
# to train again).
QUICKSTART := runs/quickstart
QUICKSTART_PROBE := --flagfile=flags/linear_eval/lbfgs.flags --shots=5 --draws=20 \
	--center_crop_fraction=1.0

quickstart: $(STAMP)
	$(PY) -m supcon_tf.pretrain --flagfile=flags/quickstart_supcon.flags \
		--model_dir=$(QUICKSTART)/supcon --overwrite
	$(PY) -m supcon_tf.pretrain --flagfile=flags/quickstart_ce.flags \
		--model_dir=$(QUICKSTART)/cross_entropy --overwrite
	$(PY) -m supcon_tf.pretrain --flagfile=flags/quickstart_supcon.flags --train_steps=0 \
		--model_dir=$(QUICKSTART)/untrained --overwrite
	for run in untrained cross_entropy supcon; do \
		$(PY) -m supcon_tf.linear_eval --model_dir=$(QUICKSTART)/$$run $(QUICKSTART_PROBE) \
			|| exit 1; \
	done
	$(PY) -m supcon_tf.quickstart --model_dir=$(QUICKSTART) --runs=untrained,cross_entropy,supcon

# The suite runs in TEST_WORKERS pytest-xdist processes, each taking whole test files (module
# fixtures are built once); 2 fits a 2-core machine (15 min there instead of 24 serially).
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_PARALLEL)

test-fast: $(STAMP)
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow"

# SupConModel, its losses, LARS and the schedules under Keras' JAX backend, without TensorFlow.
test-jax: $(STAMP_JAX)
	KERAS_BACKEND=jax $(VENV_JAX)/bin/python -m pytest -m jax tests/jax_backend

bench: $(STAMP)
	$(PY) bench/loss.py

# Bazel (Debian's offline bazel-bootstrap 4.2.3 works): one py_test per tests/**/*_test.py.
BAZEL ?= bazel
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

bazel-test: $(STAMP)
	command -v $(BAZEL) >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y bazel-bootstrap; }
	PYTHON_BIN_PATH="$(abspath $(PY))" $(BAZEL) test //...

clean:
	rm -rf runs .pytest_cache
