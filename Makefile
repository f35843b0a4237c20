# Two commands on a fresh machine (see README.md):
#   make demo   the main job on the embedded default (creates .venv and the Lava runtime)
#   make test   the test suite (creates the same environments if missing)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python
ND      = $(VENV)/bin/neurodeploy
OUT    ?= out

.PHONY: env lava demo test test-fast zoo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first: on the CPU-only machines this project runs on, 2.13.0 is a local CPU wheel;
	# elsewhere it is the normal PyPI install.
	$(PY) -m pip install --quiet "torch==2.13.0" || $(PY) -m pip install --quiet "torch>=2.3,<3"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

env: $(VENV)/.installed

# The Lava runtime: a Python 3.10 venv with lava-dl 0.6.0, cached in ~/.cache/neurodeploy (reused when present).
lava: env
	$(ND) setup lava

demo: lava
	mkdir -p $(OUT)
	$(ND) models
	$(ND) export --model pruned_squeezenet -o $(OUT)/pruned_squeezenet.nir
	$(ND) check $(OUT)/pruned_squeezenet.nir
	$(ND) validate $(OUT)/pruned_squeezenet.nir --targets model,torch --samples 200 --min-agreement 1.0
	$(ND) validate $(OUT)/pruned_squeezenet.nir --targets torch,lava --samples 8
	$(ND) energy $(OUT)/pruned_squeezenet.nir --targets cmos45nm,loihi,truenorth,spinnaker2 --samples 200

test: lava
	$(PY) -m pytest -q

test-fast: env
	$(PY) -m pytest -q -m "not slow and not lava"

# Re-train the committed zoo (every model, both twins, the recipes in neurodeploy/zoo.py).
zoo: env
	$(ND) train-zoo

bench: env
	$(ND) bench -o $(OUT)/bench

clean:
	rm -rf $(OUT) .pytest_cache
