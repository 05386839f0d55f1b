# The README's two commands: `make demo` (the main job) and `make test` (the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

.PHONY: demo test lint docs setup data clean bench-list

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel on this machine's disk (a newer one pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	# torch stays pinned while the extras install (litert-torch and transformers accept a range)
	echo "torch==2.13.0" > $(VENV)/constraints.txt
	$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt -e ".[dev,efficientnet,text,serve,edge,dist,detect,docs]"
	touch $(STAMP)

# Fashion-MNIST from Debian's package, and Chromium (the report's rendering check), where apt exists
# and they are missing.
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
		|| echo "note: could not install dataset-fashion-mnist; slimline will download Fashion-MNIST when online"; \
	fi
	@if [ ! -d /usr/share/games/fortunes ] || ! command -v espeak-ng >/dev/null 2>&1 || ! command -v sox >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fortunes espeak-ng sox) \
			|| echo "note: could not install fortunes/espeak-ng/sox; the text and speech tests that need them will be skipped"; \
		fi; \
	fi
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
		|| echo "note: could not install chromium; the report rendering test will be skipped"; \
	fi

demo: setup
	$(BIN)/slimline demo

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

# The docs site into site/; --strict: any warning (a broken link, a missing page) fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

# Every study in benchmarks/: its run.sh and the first comment line (what it measures, how long).
bench-list:
	@for f in benchmarks/*/run.sh; do printf '%-36s %s\n' "$$f" "$$(grep -m1 '^# ' "$$f" | sed 's/^# //')"; done

clean:
	rm -rf runs .pytest_cache site
