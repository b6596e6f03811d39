# The two commands of the README:
#   make lab    set everything up, then open JupyterLab on notebooks/
#   make test   set everything up, then run the whole test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done

.PHONY: setup lab test lint stop

setup: $(STAMP)

$(STAMP): requirements.txt requirements-model.txt pyproject.toml scripts/setup.sh $(wildcard samples/js/package*.json)
	VENV=$(VENV) ./scripts/setup.sh
	touch $@

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

# The test command also installs Debian's chromium for the browser test, where it can (root +
# apt-get; see scripts/setup.sh), every time: the .venv may come from an earlier `make lab`.
test: export PHI_INSTALL_CHROMIUM := 1
test: setup
	./scripts/setup.sh --browser-only
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(PY) scripts/check_notebooks.py

stop:
	$(PY) -m phihelpers stop
