# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_ID ?= demo-$(shell date -u +%Y%m%dT%H%M%SZ)
OUT    ?= outputs/multi-provider-soak

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

# The main job on the built-in simulator: 2 rounds x 6 parallel jobs, then the executed
# notebook (latency percentiles, figures) attached beside the evidence, and its self-contained HTML page.
demo: $(STAMP)
	$(BIN)/soak multi-provider --dry-run --rounds 2 --parallel 6 --run-id $(RUN_ID) --output-dir $(OUT)
	$(BIN)/papermill --log-level WARNING -k python3 notebooks/multi_provider.ipynb $(OUT)/$(RUN_ID).ipynb \
	    -p runs_json $(OUT)/$(RUN_ID).json
	$(BIN)/soak report $(OUT)/$(RUN_ID).ipynb >/dev/null
	@echo
	@echo "Signoff: $(OUT)/$(RUN_ID).json and $(OUT)/$(RUN_ID).md"
	@echo "Executed notebook: $(OUT)/$(RUN_ID).ipynb"
	@echo "HTML: $(OUT)/$(RUN_ID).html"

# Lint (ruff: soaklib, tests, bench), types (mypy strict on soaklib), then the suite.
test: $(STAMP)
	$(BIN)/ruff check soaklib tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

clean:
	rm -rf outputs/multi-provider-soak outputs/watcher-soak outputs/*.ipynb
