# Set-up and the everyday commands. `make quickstart` and `make test` create ./.venv with every
# dependency from requirements.txt when it is missing (or older than requirements.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: quickstart test test-fast bench bazel-test venv clean

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

quickstart: $(STAMP)
	$(PY) -m supcon_tf.quickstart --flagfile=flags/quickstart.flags --overwrite

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

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
