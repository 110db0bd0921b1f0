# The two commands of the README: `make demo` and `make test`. Each first runs scripts/setup_env.sh, which
# installs QGIS 3.22 (apt), .venv and the project when missing and takes about a second when all is there.
PYTHON := .venv/bin/python

.PHONY: setup demo test package bench

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PYTHON) scripts/demo.py

# ruff first (seconds): lint and import order are part of the test, as the architecture test is.
test: setup
	$(PYTHON) -m ruff check .
	QT_QPA_PLATFORM=offscreen $(PYTHON) -m pytest $(PYTEST_ARGS)

package: setup
	$(PYTHON) scripts/package_plugin.py

bench: setup
	@set -e; found=0; \
	for script in scripts/bench_*.py; do \
		[ -e "$$script" ] || continue; found=1; \
		echo "== $$script"; $(PYTHON) "$$script"; \
	done; \
	[ "$$found" = 1 ] || { echo "no scripts/bench_*.py found" >&2; exit 1; }
