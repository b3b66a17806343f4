# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test demo venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test,profile]'
	touch $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/chronodb demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
