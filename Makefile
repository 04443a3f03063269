# The two commands: `make reports` (run every study, render reports) and `make test`.
# Both bootstrap .venv themselves (scripts/bootstrap.sh), and so does `make lab` (JupyterLab).
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

.PHONY: reports test venv lab publish clean-reports help

help:
	@echo "make reports   run every notebook on PROFILE=$(PROFILE) and render reports/index.html"
	@echo "make test      run the test suite"
	@echo "make lab       open the notebooks in JupyterLab (same .venv and EPI_DATA_DIR as make reports)"
	@echo "make publish   copy the newest cpu-profile run of each study into reports/published/"

venv:
	@bash scripts/bootstrap.sh

# Two lanes side by side, one core each (scripts/run_lanes.sh): the studies on the synthetic world's
# pretrained models (00-03) and the real-data studies (04, 05).
LANE_WORLDS := $(filter notebooks/00_% notebooks/01_% notebooks/02_% notebooks/03_%,$(NOTEBOOKS))
LANE_DATA := $(filter-out $(LANE_WORLDS),$(NOTEBOOKS))
reports: venv
	@bash scripts/run_lanes.sh $(EPI) $(PROFILE) "$(LANE_WORLDS)" "$(LANE_DATA)"

# Two pytest-xdist workers (one torch thread each, tests/conftest.py), one test file at a time each
# (--dist loadfile: a module's fixtures, e.g. a pretrained model or a local Ray, are built once; xdist's
# loadgroup does not group with pytest 9.2). TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# JupyterLab on notebooks/ with the data found as in `make reports`: the server (and so every kernel
# it starts) inherits the exported EPI_DATA_DIR, and the project's kernel, registered inside .venv
# (--sys-prefix: nothing written to the home folder), carries it too, for a Lab started another way.
# LAB_ARGS passes options through, e.g. LAB_ARGS="--port=8890 --no-browser"; LAB_DIR is the folder served.
LAB_KERNEL := epi-workbench
LAB_DIR ?= notebooks
LAB_ARGS ?=
lab: venv
	@$(PY) -m ipykernel install --sys-prefix --name $(LAB_KERNEL) \
	  --display-name "Python ($(LAB_KERNEL))" --env EPI_DATA_DIR "$(EPI_DATA_DIR)" >/dev/null
	@echo "lab: kernel '$(LAB_KERNEL)' registered in $(VENV); data from $(EPI_DATA_DIR)"
	$(PY) -m jupyterlab --ServerApp.root_dir=$(LAB_DIR) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

publish: venv
	$(EPI) publish --profile cpu

clean-reports:
	find reports -mindepth 1 -maxdepth 1 ! -name published ! -name README.md -exec rm -rf {} +
