#!/usr/bin/env bash
# The Swift test suite as `make test` runs it: an optimized build with @testable imports,
# then the tests under a watchdog.
#
# The suite takes 4-5 minutes on 2 cores. A test that hangs (a deadlock, a cluster
# process that never answers) would otherwise hold CI until its own limit and leave no
# trace of where it stood. Past SPARSEKV_TEST_LIMIT seconds (default 1500) the watchdog
# prints the tests that started and never ended, every thread's stack of the test
# process (gdb, when installed) and the processes it started, then stops them all and
# fails. The test output goes to the terminal as it is written and to
# $SPARSEKV_TEST_LOG (default .build/test-output.log).
set -uo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
limit=${SPARSEKV_TEST_LIMIT:-1500}
log=${SPARSEKV_TEST_LOG:-.build/test-output.log}

eval "$(python3 scripts/blas_env.py)"
# OpenBLAS on one thread, as the CLI runs it: the tests run in parallel and call OpenBLAS
# from many threads at once, which its own thread pool is not safe for.
export OPENBLAS_NUM_THREADS=1
$SWIFT build -c release -Xswiftc -enable-testing --build-tests || exit $?
mkdir -p "$(dirname "$log")"
: > "$log"

# Line-buffered output, so the log (and CI's view of it) is current when a test hangs.
stdbuf -oL -eL $SWIFT test -c release -Xswiftc -enable-testing --skip-build "$@" > >(tee -a "$log") 2>&1 &
runner=$!

started=$SECONDS
while kill -0 "$runner" 2>/dev/null; do
    if (( SECONDS - started > limit )); then
        echo
        echo "[run_tests] the tests ran past ${limit}s; where they stand:"
        echo "[run_tests] started and not ended:"
        python3 - "$log" <<'EOF'
import re, sys
text = open(sys.argv[1], errors="replace").read()
ended = {m.split(" with ")[0] for m in re.findall(r'Test (\S.*?) (?:passed|failed|skipped)', text)}
for name in re.findall(r'Test (\S.*?) started\.', text)[1:] if "Test run started." in text else []:
    test = name.rsplit(" to ", 1)[-1] if name.startswith("case passing") else name
    if test not in ended:
        print("   ", name[:300])
EOF
        # Every process under the runner (the test process and the nodes it started, each
        # in a process group of its own), parents first.
        tree=$(ps -eo pid=,ppid= | awk -v root="$runner" '
            { parent[$1] = $2 }
            END { found[root] = 1; print root
                  do { more = 0; for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; print p; more = 1 } } while (more) }')
        echo "[run_tests] processes:"
        ps -o pid,ppid,etime,time,stat,args -p "$(echo $tree | tr ' ' ,)" | cut -c1-240
        for pid in $tree; do
            if grep -q 'PackageTests.xctest' "/proc/$pid/cmdline" 2>/dev/null && command -v gdb > /dev/null; then
                echo "[run_tests] threads of the test process $pid:"
                timeout 300 gdb -p "$pid" -batch -ex "thread apply all bt 30" 2>/dev/null | grep -E '^(Thread|#)' | cut -c1-240
            fi
        done
        kill -TERM $tree 2>/dev/null
        sleep 5
        kill -KILL $tree 2>/dev/null
        wait "$runner" 2>/dev/null
        echo "[run_tests] stopped after ${limit}s (SPARSEKV_TEST_LIMIT)"
        exit 124
    fi
    sleep 2
done
wait "$runner"
