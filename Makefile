# Two commands run everything on a fresh machine: `make lab` and `make test`.
# Both create .venv from requirements.txt (the one list of pins) when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: lab test lint bench demo browser clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	grep -v 'no-deps' requirements.txt > $(VENV)/requirements-with-deps.txt
	$(PIP) install -q -r $(VENV)/requirements-with-deps.txt
	$(PIP) install -q --no-deps $$(grep 'no-deps' requirements.txt | grep -v '^#' | cut -d'#' -f1)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

## JupyterLab on notebooks/, on 127.0.0.1, opening the tuning notebook (bundled ranker config).
## default_url puts the notebook's path in the URL Jupyter prints, for a browser on another machine.
lab: $(STAMP)
	cd notebooks && ../$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/01_tune_table_sizes.ipynb \
		$(if $(filter 0,$(shell id -u)),--allow-root)

## Lint, then every test: unit, CLI, notebooks top to bottom, and the browser test; then the
## accuracy tests again under each other ATEN_CPU_CAPABILITY this CPU has (other summation orders).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	for cap in $$($(BIN)/python scripts/cpu_capabilities.py --others); do \
		echo "== pytest -m capability, ATEN_CPU_CAPABILITY=$$cap"; \
		ATEN_CPU_CAPABILITY=$$cap $(BIN)/python -m pytest -m capability -q || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Speed and memory goals; figures go into the README's performance table.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

## Headless run of the main job on the bundled ranker config: writes the static report.
demo: $(STAMP)
	$(BIN)/embviz report $$($(BIN)/python -c 'import embviz; print(embviz.example("ranker"))') \
		--out out/report --gpus 4 --hbm-gib 80
	@echo "report: $$(pwd)/out/report/index.html"

## Debian's chromium for the browser test (needs root; CI's .ci/run calls it).
browser:
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

clean-venv:
	rm -rf $(VENV)
