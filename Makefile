# The two quick-start commands: `make demo` and `make test`. Each sets up .venv on first use (and again when
# pyproject.toml or constraints.txt change), so a fresh clone needs nothing but Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-train-gui-azure-dev
DEMO_PLAN ?= resources/demo/plan.toml
DEMO_RUN ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo demo-cli test bench calibrate clean bundle bundle-smoke

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,gui,azure,dev]'
	touch $(STAMP)

# The app on the bundled demo plan; Launch (Ctrl+R) trains it on this machine. `make demo-cli` does the same
# without a window: plan, then run.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/distill-studio --demo

demo-cli: $(STAMP)
	$(BIN)/distill plan $(DEMO_PLAN)
	@if [ "$(DEMO_PLAN)" = "resources/demo/plan.toml" ]; then \
		HF_HUB_OFFLINE=1 $(BIN)/distill run $(DEMO_PLAN) --run-dir $(DEMO_RUN); fi

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/calibrate_throughput.py

calibrate: $(STAMP)
	$(BIN)/python benchmarks/calibrate_throughput.py --fit

# The packaged app (packaging/README.md): `make bundle` builds dist/DistillStudio-<version>-<platform>/ (and on Linux
# its tarball and .deb) with PyInstaller; `make bundle-smoke` starts it as a user would and trains the demo with it.
BUNDLE_STAMP := $(VENV)/.installed-bundle
$(BUNDLE_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt 'pyinstaller>=6.10'
	touch $(BUNDLE_STAMP)

bundle: $(BUNDLE_STAMP)
	$(BIN)/python packaging/build.py

bundle-smoke: $(STAMP)
	$(BIN)/python packaging/smoke.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis packaging/build-icons
