# Two commands set everything up on a fresh machine:
#   make demo   venv + pinned requirements, precompute the demo run if missing, open the explorer
#   make test   venv + test requirements, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUNS ?= runs

.PHONY: demo test app

$(VENV)/.requirements: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.requirements-test: requirements-test.txt $(VENV)/.requirements
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

demo: $(VENV)/.requirements
	$(PY) -m precompute run --preset demo --out $(RUNS)/demo
	$(MAKE) app

app: $(VENV)/.requirements
	$(PY) -m streamlit run app/main.py --browser.gatherUsageStats false -- --runs $(RUNS)

test: $(VENV)/.requirements-test
	$(PY) -m pytest $(PYTEST_ARGS)
