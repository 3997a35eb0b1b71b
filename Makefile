# The two quick-start commands: `make demo` and `make test`. Each sets up .venv on first use (and again when
# pyproject.toml or the lock change), installing exactly the lock's pins (lock/linux-x86_64-cpu.txt, hashes checked),
# so a fresh clone needs nothing but Python 3.11 and make. `make lock` makes the lock again (packaging/deps.py).
PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-lock
LOCK := lock/linux-x86_64-cpu.txt
DEMO_PLAN ?= resources/demo/plan.toml
DEMO_RUN ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo demo-cli test bench calibrate clean bundle bundle-smoke lock lock-check screenshots

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python packaging/deps.py install linux-x86_64-cpu
	touch $(STAMP)

# The lock again, after pyproject.toml or lock/*.in changed: keeps every other pin. `make lock UPGRADE=1` takes the
# newest releases pyproject.toml allows, `make lock UPGRADE=NAME` those of one package. uv resolves every
# platform's lock from this one machine.
UV_VERSION := $(shell sed -n 's/^UV_VERSION = "\([^"]*\)".*/\1/p' packaging/deps.py)
LOCK_VENV := .venv-lock
$(LOCK_VENV)/.uv-$(UV_VERSION):
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)' 'packaging>=24'
	touch $@

lock: $(LOCK_VENV)/.uv-$(UV_VERSION)
	$(LOCK_VENV)/bin/python packaging/deps.py lock $(if $(filter 1,$(UPGRADE)),--upgrade,$(if $(UPGRADE),--upgrade-package $(UPGRADE)))

lock-check: $(STAMP)
	$(BIN)/python packaging/deps.py check

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

# The app's screens in their real states at 1320x860 and 960x640, offscreen: artifacts/screenshots/tour/
screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python tools/screenshot_tour.py

calibrate: $(STAMP)
	$(BIN)/python benchmarks/calibrate_throughput.py --fit

# The packaged app (packaging/README.md): `make bundle` builds dist/DistillStudio-<version>-<platform>/ (and on Linux
# its tarball and .deb) with PyInstaller; `make bundle-smoke` starts it as a user would and trains the demo with it.
bundle: $(STAMP)
	$(BIN)/python packaging/build.py

bundle-smoke: $(STAMP)
	$(BIN)/python packaging/smoke.py

clean:
	rm -rf $(VENV) $(LOCK_VENV) build dist *.egg-info .pytest_cache .hypothesis packaging/build-icons
