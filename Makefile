# The two entry points of the README. Each sets itself up (venv, packages) and is safe to re-run.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench mutation clean

demo:
	@bash scripts/bootstrap.sh plots  # the report's plots: matplotlib (the `plots` extra)
	$(BIN)/seamguard simulate --scenario thermal-cascade --seeds 2 --out demo-out

test:
	@bash scripts/bootstrap.sh dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2

bench:
	@bash scripts/bootstrap.sh dev
	$(BIN)/python bench/detect.py
	$(BIN)/python bench/tick.py --gpus 16384
	$(BIN)/python bench/world.py --gpus 16384
	$(BIN)/python bench/twin.py --healthy-node-days 1000

# Not part of `make test`: about 8,000 mutants, 30-60 minutes on 2 cores (docs/testing.md).
mutation:
	@bash scripts/bootstrap.sh dev
	bash scripts/mutation.sh

clean:
	rm -rf $(VENV) demo-out engine-demo mutants .mypy_cache .ruff_cache .pytest_cache
