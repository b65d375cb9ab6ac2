# Two entry points do all set-up: `make demo` and `make test` (each creates .venv when missing).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed
OUT ?= out/demo

.PHONY: demo test test-fast docs bench bench-patch clean samples plugin

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $(STAMP)

demo: $(STAMP)  ## Run the crack job on the bundled sample surveys -> out/demo/, the deck's later date -> out/demo_later/, and compare them
	mkdir -p $(dir $(OUT))
	$(VENV)/bin/survey-cracks run sample_surveys --out $(OUT)
	@echo "road_scans/ (photos, no georeferencing) as one collection: $(OUT)/road_scans/collection/"
	@ls $(OUT)/road_scans/collection $(OUT)/road_scans/collection/heatmaps
	$(VENV)/bin/survey-cracks run sample_surveys/later --out $(OUT)_later
	$(VENV)/bin/survey-cracks compare $(OUT) $(OUT)_later

test: $(STAMP)  ## The whole test suite
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## All but the slow tests (processes, kills, clusters, whole surveys; see tests/conftest.py)
	$(PY) -m pytest -q -m "not slow"

# The docs tools in their own stamp, so `make test` installs what it always did. mkdocs is pinned
# below 2 in the docs extra, so its notice about 2.0 is silenced.
$(DOCS_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)  ## The documentation site -> site/ (offline build; any warning fails it; open site/index.html)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)  ## Mask, dense and patch mode vs the bare network and a notebook loop (about 30-60 min)
	$(PY) bench/segment_throughput.py

bench-patch: $(STAMP)  ## The patch-mode benchmark of the previous pipeline (about 35 min)
	$(PY) bench/throughput.py

samples: $(STAMP)  ## Regenerate sample_surveys/ (procedural imagery)
	$(PY) sample_surveys/make_samples.py --out sample_surveys

plugin:  ## The QGIS plugin as an installable zip -> dist/survey_cracks_qgis-<version>.zip (Plugins > Install from ZIP)
	$(PYTHON) qgis_plugin/package.py dist

clean:
	rm -rf out .pytest_cache site dist
