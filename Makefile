# The two commands: `make reports` (run every study, render reports) and `make test`.
# Both bootstrap .venv themselves (scripts/bootstrap.sh).
PROFILE ?= cpu
VENV ?= .venv
PY := $(VENV)/bin/python
EPI := $(VENV)/bin/epi
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
PYTEST_ARGS ?=

# Real data: ../shared/data when it exists (this repository's CI and development machines),
# else data/ in the repository. An EPI_DATA_DIR set by the caller wins.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin EPI_DATA_DIR), undefined)
  EPI_DATA_DIR := $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),$(CURDIR)/data)
endif
export EPI_DATA_DIR

.PHONY: reports test venv publish clean-reports help

help:
	@echo "make reports   run every notebook on PROFILE=$(PROFILE) and render reports/index.html"
	@echo "make test      run the test suite"
	@echo "make publish   copy the newest cpu-profile run of each study into reports/published/"

venv:
	@bash scripts/bootstrap.sh

reports: venv
	@status=0; for nb in $(NOTEBOOKS); do \
	  echo "== $$nb ($(PROFILE))"; \
	  $(EPI) run $$nb --profile $(PROFILE) || status=1; \
	done; \
	$(EPI) report; \
	echo "reports/index.html written"; exit $$status

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

publish: venv
	$(EPI) publish --profile cpu

clean-reports:
	find reports -mindepth 1 -maxdepth 1 ! -name published ! -name README.md -exec rm -rf {} +
