# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/soak multi-provider --dry-run --rounds 2 --parallel 6
	$(BIN)/papermill --cwd . -k python3 notebooks/multi_provider.ipynb outputs/multi_provider.ipynb \
	    -p runs_json "$$(ls -t outputs/multi-provider-soak/*.json | head -1)" --log-level WARNING
	@echo "Executed notebook: outputs/multi_provider.ipynb"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf outputs/multi-provider-soak outputs/watcher-soak outputs/*.ipynb
