# make demo  — set up .venv (first time: ~10 min, llama-cpp-python compiles) and train the default recipe a few steps
# make test  — the whole test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.minirft-installed

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	OMP_NUM_THREADS=2 $(VENV)/bin/minirft train recipes/polite.yaml training.steps=3

test: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TRITON_INTERPRET=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
