# Each target creates .venv and installs the project when missing (idempotent:
# a stamp file records the pyproject.toml it was installed from).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench report-check setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/python -m pip install --quiet torch torchvision
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cohortlab demo demo

test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# style (ruff), the layers (import-linter contracts in pyproject.toml) and types where they are enforced
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy analytics/stats analytics/models analytics/validation analytics/report analytics/stages.py analytics/outer_folds.py analytics/fit_plan.py analytics/fit_results.py analytics/prediction_table.py analytics/scoring.py pipeline/store pipeline/config_base.py pipeline/config_variables.py pipeline/config_feature_sets.py pipeline/config_validation.py pipeline/config_run.py pipeline/errors.py pipeline/lazy.py pipeline/model_kinds.py cohortlab

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

report-check: $(STAMP)
	bash bench/report_check.sh

clean:
	rm -rf $(VENV) demo reports/demo
