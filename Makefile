# SparseKV: the two commands a new user needs are `make demo` and `make test`.
SWIFT ?= swift
RELEASE = -c release
BIN = .build/release/sparsekv

.PHONY: setup build demo test test-serve bench bench-context bench-eval bench-frontier layer-sensitivity bench-bandwidth netns-e2e docker-e2e clean

setup:            ## system packages, model, texts (idempotent)
	bash scripts/setup.sh

build: setup
	$(SWIFT) build $(RELEASE) --product sparsekv

demo: build       ## the main job
	bash scripts/demo.sh

test: setup       ## the test suite (optimized build; the real model runs in it), the HTTP API with the openai client, then the emulated-link and docker compose end-to-end tests (root)
	SWIFT=$(SWIFT) bash scripts/run_tests.sh
	bash scripts/test_serve.sh --bin $(BIN)
	bash cluster/netns-e2e.sh --bin $(BIN)
	bash cluster/docker-e2e.sh --bin $(BIN)

test-serve: build ## only the HTTP API end-to-end test (sparsekv serve, then a 3-worker cluster with coordinator --http)
	bash scripts/test_serve.sh --bin $(BIN)

bench: build      ## speed benchmark vs llama.cpp in the same run (when llama-cpp-python is installed), then bench-context
	bash scripts/bench_speed.sh
	python3 scripts/bench_context.py

bench-context: build ## tok/s, KV bytes and peak RSS at 512-8192 tokens, every cache and llama.cpp (reports/speed.{json,md,svg}, ~1 h)
	python3 scripts/bench_context.py

bench-eval: build ## CSR evaluation table: KV caches vs fp32 on cfi-ch4 and alice29 (reports/eval-*.md)
	bash scripts/bench_eval.sh

bench-frontier: build ## issue 11's quality frontier: perplexity vs bits/ch, token by token, cfi-ch4 + alice29 + lcet10 and ctx 4096 (reports/frontier.{json,md,svg}, ~2 h on 1 thread; resumes)
	python3 scripts/bench_frontier.py

layer-sensitivity: build ## CSR key pairs per layer from each layer's measured KL effect, on a calibration text (reports/layer-sensitivity.{json,md}, ~15 min)
	python3 scripts/layer_sensitivity.py

netns-e2e: build  ## the cluster over emulated 100 Mbit/s links: a network namespace per process, tbf (root)
	bash cluster/netns-e2e.sh --bin $(BIN)

docker-e2e:       ## the cluster in Docker compose (root): generation + drain vs a local run; needs a built $(BIN)
	bash cluster/docker-e2e.sh --bin $(BIN)

bench-bandwidth: build ## KV bandwidth report over emulated links (root; reports/bandwidth.{json,md,svg}, ~35 min)
	python3 scripts/bench_bandwidth.py

clean:
	rm -rf .build
