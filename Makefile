# Two commands on a fresh machine (see README.md):
#   make demo   the main job on the embedded default (creates .venv and the Lava runtime)
#   make test   the test suite (creates the same environments if missing)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python
ND      = $(VENV)/bin/neurodeploy
OUT    ?= out

.PHONY: env lava demo test test-fast install-check zoo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first: on the CPU-only machines this project runs on, 2.13.0 is a local CPU wheel;
	# elsewhere it is the normal PyPI install.
	$(PY) -m pip install --quiet "torch==2.13.0" || $(PY) -m pip install --quiet "torch>=2.3,<3"
	$(PY) -m pip install --quiet -e ".[test]"
	# Sinabs writes the IF graphs the interop tests read; it pins nir<=1.0.4 and samna (DynapCNN
	# hardware), neither of which its NIR export needs, so it goes in without its pins
	$(PY) -m pip install --quiet --no-deps "sinabs==3.1.3" "pbr>=6"
	# NeuroBench's metrics, checked against our counts; its dependencies are its datasets' (audio,
	# event cameras), which the metrics do not use
	$(PY) -m pip install --quiet --no-deps "neurobench==2.3.0" && $(PY) -m pip install --quiet "tqdm>=4"
	# Norse and Rockpool write the LIF / CubaLIF graphs the interop tests read. Norse pulls torchvision
	# (and with it another torch) for its datasets and Rockpool pins nir<=1.0.4 for its NIR extra;
	# their NIR exporters need only torch, nir and nirtorch, installed above
	$(PY) -m pip install --quiet --no-deps "norse==1.1.0" "rockpool==3.1.0" && $(PY) -m pip install --quiet "scipy>=1.10"
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
	$(ND) energy $(OUT)/pruned_squeezenet.nir --targets cmos45nm,loihi1,loihi2,truenorth,spinnaker2 --samples 200
	$(ND) map $(OUT)/pruned_squeezenet.nir --target loihi2 --plot $(OUT)/pruned_squeezenet_loihi2.png

test: lava
	$(PY) -m pytest -q

test-fast: env
	$(PY) -m pytest -q -m "not slow and not lava"

# The package as users get it: `pip install .` (not editable) into a fresh venv, then the
# commands run from outside the checkout (CI runs this after the tests).
INSTALL_CHECK ?= /tmp/neurodeploy-install-check
install-check:
	rm -rf $(INSTALL_CHECK) build *.egg-info && $(PYTHON) -m venv $(INSTALL_CHECK)/venv
	$(INSTALL_CHECK)/venv/bin/python -m pip install --quiet "torch==2.13.0" || \
		$(INSTALL_CHECK)/venv/bin/python -m pip install --quiet "torch>=2.3,<3"
	$(INSTALL_CHECK)/venv/bin/python -m pip install --quiet .
	cd $(INSTALL_CHECK) && env -u NEURODEPLOY_ZOO venv/bin/neurodeploy --version
	cd $(INSTALL_CHECK) && venv/bin/neurodeploy targets
	cd $(INSTALL_CHECK) && venv/bin/neurodeploy models
	cd $(INSTALL_CHECK) && venv/bin/neurodeploy export --model pruned_squeezenet -o p.nir
	cd $(INSTALL_CHECK) && venv/bin/neurodeploy energy p.nir --targets cmos45nm,loihi --samples 8
	rm -rf $(INSTALL_CHECK) build *.egg-info

# Re-train the committed zoo (every model, both twins, the recipes in neurodeploy/zoo.py).
zoo: env
	$(ND) train-zoo

bench: env
	$(ND) bench -o $(OUT)/bench

clean:
	rm -rf $(OUT) .pytest_cache
