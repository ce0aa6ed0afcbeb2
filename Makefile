# Two commands from a fresh clone: `make train` trains the default config, `make test` runs the
# test suite. Both create the virtual environment .venv and install the project into it when
# it is missing or pyproject.toml has changed since; otherwise they start at once.
#
#   make train CONFIG=config/fast.json ARGS="-o trainer.epochs=3"
#   make train RESUME=saved/models/Mnist_LeNet/RUN_ID    # resumes that run (train.py -r)
#   make test ARGS="-m 'not slow'"         # the fast part of the suite
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu   # a CPU-only torch build
#
# In a project made from the template, `make update` merges the template's later changes
# (update_project.py): TEMPLATE=PATH_OR_URL where it has moved, WITH=UNIT[,UNIT...] to add units;
# `make units` lists the template's units.

PYTHON ?= python3
VENV ?= .venv
# The torch build the suite is tested with; pinned so that pip does not pick a newer, larger one.
TORCH ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
CONFIG ?= config/config.json
RESUME ?=
ARGS ?=
TEMPLATE ?=
WITH ?=
COPIER ?= copier>=9.4,<10

BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install train test lint update units clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

train: $(INSTALLED)
	$(BIN)/python train.py $(if $(RESUME),-r $(RESUME),-c $(CONFIG)) $(ARGS)

test: $(INSTALLED)
	$(BIN)/python -m pytest $(ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# `make update` and `make units` need only copier, not the project's own packages (torch).
update units:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import copier" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(COPIER)"
	@$(BIN)/python update_project.py $(if $(filter units,$@),--list) $(if $(TEMPLATE),--template "$(TEMPLATE)") $(if $(WITH),--with "$(WITH)")

clean:
	rm -rf $(VENV)
