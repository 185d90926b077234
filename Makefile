# One command to set up and run the demo, one to set up and run the tests.
# Each creates .venv on first use and reinstalls when pyproject.toml or requirements.txt change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO ?= outputs/demo

.PHONY: demo test install clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/slotmatch generate --preset movi-c-like --out $(DEMO)/data --num-train 16 --num-val 8 --frames 12 --size 64
	$(VENV)/bin/slotmatch show $(DEMO)/data --split validation --out $(DEMO)/preview.png
	@echo "demo written to $(DEMO)/ (open $(DEMO)/preview.png)"

clean-demo:
	rm -rf $(DEMO)
