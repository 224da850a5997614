# SparseKV: the two commands a new user needs are `make demo` and `make test`.
SWIFT ?= swift
RELEASE = -c release
BIN = .build/release/sparsekv

.PHONY: setup build demo test bench bench-eval docker-e2e clean

setup:            ## system packages, model, texts (idempotent)
	bash scripts/setup.sh

build: setup
	$(SWIFT) build $(RELEASE) --product sparsekv

demo: build       ## the main job
	bash scripts/demo.sh

test: setup       ## the test suite (optimized build; the real model runs in it)
	$(SWIFT) test $(RELEASE) -Xswiftc -enable-testing

bench: build      ## speed benchmark vs llama.cpp in the same run (when llama-cpp-python is installed)
	bash scripts/bench_speed.sh

bench-eval: build ## CSR evaluation table: KV caches vs fp32 on cfi-ch4 and alice29 (reports/eval-*.md)
	bash scripts/bench_eval.sh

docker-e2e:       ## compose cluster in Docker (as root): generation + drain checked against a local run
	SPARSEKV_BIN="$${SPARSEKV_BIN:-$(BIN)}" bash cluster/docker-e2e.sh

clean:
	rm -rf .build
