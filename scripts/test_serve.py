#!/usr/bin/env python3
"""End-to-end test of the HTTP API with the real `openai` client, curl and
prometheus_client's parser (run by `make test` through scripts/test_serve.sh).

  test_serve.py --bin PATH                 starts `sparsekv serve` itself (single process)
  test_serve.py --bin PATH --cluster URL   a running `coordinator --http` (cluster/launch.sh --http)
  test_serve.py --bin PATH --serve-cluster EP [--logs DIR]
                                           starts `sparsekv serve --cluster EP` against a running cluster
                                           (cluster/launch.sh --logs DIR); with DIR it kills a worker at the end

Checks: /health, /v1/models; greedy chat and text completions equal `sparsekv generate`
(single process: a local run; cluster: `generate --cluster` and a local run with the same
KV cache); streamed text equals the non-streamed text, one SSE chunk per token, the chunk
format (curl); concurrent clients each get their own text; stop sequences; each bad request
gets its documented status and the server keeps serving; an overload gets 503 and the
admitted requests are still right; /metrics parses and counts the tokens (cluster: its wire
byte counters equal the coordinator's socket counters); SIGTERM lets a stream in flight finish.
Cluster: the reply's KV bytes per worker sum to the session's KV bytes and equal a local run's
cache bytes; /metrics' per-worker KV gauges during a stream and after it; with --logs, a killed
worker's sparsekv_worker_ready drops to 0 once the coordinator declares it dead.
"""
import argparse
import concurrent.futures as futures
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

PROMPTS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "Write one word that rhymes with cat.",
    "How many legs does a spider have?",
]
failures = []


def check(cond, what):
    print(("  ok   " if cond else "  FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def http(method, url, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def generate(args, prompt, n, chat=True, cluster=None, kv=None):
    return generate_json(args, prompt, n, chat, cluster, kv)["text"]


def generate_json(args, prompt, n, chat=True, cluster=None, kv=None):
    cmd = [args.bin, "generate", "-p", prompt, "-n", str(n), "--json", "-t", str(args.threads)]
    if chat:
        cmd.append("--chat")
    if cluster:
        cmd += ["--cluster", cluster]
    else:
        cmd += ["--kv", kv or args.kv, "--ctx", str(args.ctx)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def stream_chat(client, model, prompt, n, **extra):
    pieces, chunks, finish = [], 0, None
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=n, temperature=0, stream=True, **extra):
        if chunk.choices:
            c = chunk.choices[0]
            if c.delta.content is not None and c.delta.role is None and c.finish_reason is None:
                pieces.append(c.delta.content)
                chunks += 1
            finish = c.finish_reason or finish
    return "".join(pieces), chunks, finish


def chat(client, model, prompt, n, **extra):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=n, temperature=0, **extra)
    return r


def curl_sse(base, prompt, n):
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": n, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    out = subprocess.run(["curl", "-sN", "--max-time", "300", "-H", "Content-Type: application/json", "-d", body,
                          base + "/v1/chat/completions", "-D", "-"], check=True, capture_output=True, text=True).stdout
    head, _, events = out.partition("\n\n")  # text mode turned the headers' CRLFs into LFs
    return head, events


def metric_samples(base):
    status, text = http("GET", base + "/metrics")
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return status, samples


def metric(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def run_checks(args, base, cluster_endpoint=None):
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
    status, body = http("GET", base + "/health")
    check(status == 200 and json.loads(body)["status"] == "ok", f"GET /health is 200 ok ({status} {body})")
    model = client.models.list().data[0].id
    check(bool(model), f"GET /v1/models lists {model}")

    print("== greedy text equals sparsekv generate", flush=True)
    n = args.tokens
    r = chat(client, model, PROMPTS[0], n)
    text = r.choices[0].message.content
    reference = generate(args, PROMPTS[0], n, cluster=cluster_endpoint)
    check(text == reference, f"chat completion equals generate{' --cluster' if cluster_endpoint else ''} --chat: {text!r} vs {reference!r}")
    if cluster_endpoint:
        local = generate(args, PROMPTS[0], n)
        check(text == local, f"cluster chat completion equals a local run with --kv {args.kv}: {text!r} vs {local!r}")
    ext = (r.model_extra or {}).get("sparsekv", {})
    check(r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 10, f"usage {r.usage}")
    check(ext.get("kv_cache_bytes", 0) > 0 and "kv_cache" in ext, f"sparsekv extension {ext}")
    if cluster_endpoint:
        check(ext.get("workers") == 3 and ext.get("activation_bytes_sent", 0) > 0, "the extension counts 3 workers and activation bytes")
        per = ext.get("kv_cache_bytes_per_worker") or {}
        check(sorted(per) == ["w1", "w2", "w3"] and all(v > 0 for v in per.values())
              and sum(per.values()) == ext.get("kv_cache_bytes"),
              f"kv_cache_bytes_per_worker names w1..w3 and sums to kv_cache_bytes {ext.get('kv_cache_bytes')} ({per})")
        local = generate_json(args, PROMPTS[0], n)
        check(sum(per.values()) == local["kvCacheBytes"],
              f"the workers' KV bytes sum to a local run's cache bytes with --kv {args.kv} ({sum(per.values())} vs {local['kvCacheBytes']})")
    tr = client.completions.create(model=model, prompt="The capital of France is", max_tokens=n, temperature=0)
    tref = generate(args, "The capital of France is", n, chat=False, cluster=cluster_endpoint)
    check(tr.choices[0].text == tref, f"text completion equals generate: {tr.choices[0].text!r} vs {tref!r}")

    print("== streaming", flush=True)
    streamed, chunks, finish = stream_chat(client, model, PROMPTS[0], n)
    check(streamed == text, f"streamed text equals the non-streamed text ({streamed!r})")
    check(chunks == r.usage.completion_tokens, f"one content chunk per token ({chunks} chunks, {r.usage.completion_tokens} tokens)")
    check(finish == r.choices[0].finish_reason, f"same finish_reason ({finish})")
    head, events = curl_sse(base, PROMPTS[1], n)
    check("text/event-stream" in head.lower(), "curl: Content-Type text/event-stream")
    blocks = [b for b in events.split("\n\n") if b.strip()]
    check(all(b.startswith("data: ") and "\n" not in b for b in blocks), "curl: every event is one 'data: ' line and a blank line")
    check(blocks[-1] == "data: [DONE]", "curl: the stream ends with data: [DONE]")
    objs = [json.loads(b[6:]) for b in blocks[:-1]]
    check(len({o["id"] for o in objs}) == 1 and all(o["object"] == "chat.completion.chunk" for o in objs),
          "curl: one id, object chat.completion.chunk")
    check(objs[0]["choices"][0]["delta"].get("role") == "assistant", "curl: the first chunk carries the role")
    usage = objs[-1]
    check(usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1, "curl: include_usage adds a usage chunk")
    content = [o for o in objs if o["choices"] and "content" in o["choices"][0]["delta"] and o["choices"][0]["finish_reason"] is None]
    check(len(content) == 1 + usage["usage"]["completion_tokens"], "curl: the role chunk, then one chunk per token")
    finals = [o for o in objs if o["choices"] and o["choices"][0]["finish_reason"]]
    check(len(finals) == 1 and "sparsekv" in finals[0], "curl: one final chunk with finish_reason and the sparsekv object")

    print("== stop sequences", flush=True)
    words = text.split()
    if len(words) >= 3:
        stop = " " + words[2]
        s = chat(client, model, PROMPTS[0], n, stop=[stop])
        cut = text[:text.index(stop)]
        check(s.choices[0].message.content == cut and s.choices[0].finish_reason == "stop",
              f"stop {stop!r} cuts the text to {cut!r} ({s.choices[0].message.content!r})")
        st, _, fin = stream_chat(client, model, PROMPTS[0], n, stop=[stop])
        check(st == cut and fin == "stop", f"streamed stop gives the same ({st!r})")

    print("== concurrent clients", flush=True)
    expected = {p: chat(client, model, p, n).choices[0].message.content for p in PROMPTS[: args.concurrency]}

    def one(i):
        p = PROMPTS[i % len(expected)]
        if i % 2:
            return p, stream_chat(client, model, p, n)[0]
        return p, chat(client, model, p, n).choices[0].message.content

    with futures.ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(one, range(args.concurrency)))
    check(all(expected[p] == t for p, t in results), f"{args.concurrency} concurrent clients (streamed and not) each get their own text")

    print("== bad requests", flush=True)
    url = base + "/v1/chat/completions"
    cases = [
        ("bad JSON", None, b'{"messages": [', 400, "invalid_json"),
        ("unknown field", {"messages": [{"role": "user", "content": "x"}], "max_tokenz": 3}, None, 400, "unknown_field"),
        ("wrong type", {"messages": [{"role": "user", "content": "x"}], "max_tokens": "three"}, None, 400, "invalid_value"),
        ("n = 2", {"messages": [{"role": "user", "content": "x"}], "n": 2}, None, 400, "invalid_value"),
        ("prompt over the context", {"messages": [{"role": "user", "content": "word " * (args.ctx + 10)}]}, None, 400,
         "context_length_exceeded"),
    ]
    for name, body, raw, want, code in cases:
        status, text_ = http("POST", url, body, raw)
        try:
            err = json.loads(text_)["error"]
        except (ValueError, KeyError):
            err = {}
        check(status == want and err.get("code") == code and err.get("message"), f"{name}: {status} {err.get('code')}")
    status, _ = http("GET", base + "/health")
    check(status == 200, "still serving after the bad requests")

    print("== overload", flush=True)
    burst = args.overload
    def burst_one(i):
        return http("POST", url, {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": n, "temperature": 0})
    with futures.ThreadPoolExecutor(burst) as pool:
        answers = list(pool.map(burst_one, range(burst)))
    codes = [s for s, _ in answers]
    ok = [json.loads(b)["choices"][0]["message"]["content"] for s, b in answers if s == 200]
    refused = [json.loads(b)["error"]["code"] for s, b in answers if s == 503]
    check(len(ok) + len(refused) == burst and refused and all(c == "server_overloaded" for c in refused),
          f"{burst} requests at once: {len(ok)} answered, {len(refused)} refused with 503 server_overloaded ({codes})")
    check(all(t == text for t in ok), "the admitted requests still get the right text")
    check(chat(client, model, PROMPTS[0], n).choices[0].message.content == text, "still serving after the overload")

    print("== metrics", flush=True)
    status, before = metric_samples(base)
    r2 = chat(client, model, PROMPTS[1], n)
    status, after = metric_samples(base)
    check(status == 200, "GET /metrics parses with prometheus_client")
    gained = metric(after, "sparsekv_generated_tokens_total") - metric(before, "sparsekv_generated_tokens_total")
    check(gained == r2.usage.completion_tokens, f"sparsekv_generated_tokens_total gained the reply's tokens ({gained})")
    check(metric(after, "sparsekv_prefill_seconds_count") > metric(before, "sparsekv_prefill_seconds_count"),
          "the prefill histogram counted the request")
    check(metric(after, "sparsekv_http_requests_total", endpoint="chat", status="400") >= 4, "400s are counted by endpoint and status")
    if cluster_endpoint:
        stats = json.loads(subprocess.run([args.bin, "cluster", "stats", "--cluster", cluster_endpoint],
                                          check=True, capture_output=True, text=True).stdout)
        _, now = metric_samples(base)
        compared = 0
        for peer, kinds in stats["byPeer"].items():
            # The workers' data links; their heartbeat links ("w1.hb", ...) carry control only.
            if not peer.startswith("w") or peer.endswith(".hb"):
                continue
            for kind in ("activations", "kv", "dictionary"):
                for direction, field in (("sent", "sentBytes"), ("received", "receivedBytes")):
                    got = metric(now, "sparsekv_wire_bytes_total", peer=peer, kind=kind, direction=direction)
                    if got != kinds[kind][field]:
                        check(False, f"wire bytes {peer} {kind} {direction}: metrics {got} vs socket counters {kinds[kind][field]}")
                    compared += 1
        check(compared == 18, f"/metrics wire byte counters equal the coordinator's socket counters ({compared} series)")
        ready = [v for (name, labels), v in now.items() if name == "sparsekv_worker_ready"]
        check(ready == [1.0, 1.0, 1.0], f"sparsekv_worker_ready is 1 for the 3 workers ({ready})")
        kv_gauges(base, model)
    return text


def worker_gauges(samples, name):
    return {dict(labels)["worker"]: v for (n, labels), v in samples.items() if n == name}


def kv_gauges(base, model):
    """/metrics' KV bytes per worker: non-zero on every worker while a session runs, their sum
    the sessions' KV bytes; zero once it ended."""
    print("== KV bytes per worker in /metrics", flush=True)
    done = threading.Event()
    def long_stream():
        try:
            curl_sse(base, "Count from one to one hundred in words, separated by commas.", 96)
        finally:
            done.set()
    t = threading.Thread(target=long_stream)
    t.start()
    seen = None
    while not done.is_set():
        _, s = metric_samples(base)
        g = worker_gauges(s, "sparsekv_worker_kv_cache_bytes")
        if len(g) == 3 and all(v > 0 for v in g.values()) and metric(s, "sparsekv_sessions_active") >= 1:
            seen = (g, metric(s, "sparsekv_kv_cache_bytes"))
            break
        time.sleep(0.05)
    t.join(300)
    check(seen is not None and sum(seen[0].values()) == seen[1],
          f"during a stream each worker's KV gauge is > 0 and they sum to sparsekv_kv_cache_bytes ({seen})")
    _, s = metric_samples(base)
    g = worker_gauges(s, "sparsekv_worker_kv_cache_bytes")
    check(sorted(g) == ["w1", "w2", "w3"] and all(v == 0 for v in g.values()) and metric(s, "sparsekv_kv_cache_bytes") == 0,
          f"after the stream the KV gauges are 0 ({g})")


def kill_worker(args, base, model, text):
    """SIGKILL the last worker: its sparsekv_worker_ready must drop to 0 once the coordinator
    declares it dead (heartbeat), and the cluster keep serving the same greedy text."""
    print("== a killed worker's ready gauge drops", flush=True)
    pids = [int(p) for p in open(os.path.join(args.logs, "pids")).read().split()]
    os.kill(pids[-1], signal.SIGKILL)
    victim = f"w{len(pids) - 1}"
    deadline, g = time.time() + 60, {}
    while time.time() < deadline:
        _, s = metric_samples(base)
        g = worker_gauges(s, "sparsekv_worker_ready")
        if g.get(victim) == 0.0:
            break
        time.sleep(0.1)
    dropped = dict(g)
    # A neighbour that takes the dead worker's layers is not ready while it loads them (the
    # core may re-plan in the same step that declares the death): the others must be
    # ready again once the failover is done.
    while time.time() < deadline and not all(v == 1.0 for w, v in g.items() if w != victim):
        time.sleep(0.1)
        _, s = metric_samples(base)
        g = worker_gauges(s, "sparsekv_worker_ready")
    others = {w: v for w, v in g.items() if w != victim}
    check(dropped.get(victim) == 0.0 and g.get(victim, 0.0) == 0.0 and len(others) == 2
          and all(v == 1.0 for v in others.values()),
          f"sparsekv_worker_ready{{worker={victim}}} dropped to 0 after SIGKILL ({dropped}); the others are 1 "
          f"again after the failover ({g})")
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
    deadline, status = time.time() + 60, 0
    while time.time() < deadline:
        status, _ = http("GET", base + "/health")
        if status == 200:
            break
        time.sleep(0.2)
    after = chat(client, model, PROMPTS[0], args.tokens).choices[0].message.content if status == 200 else None
    check(after == text, f"after the failover the cluster serves the same greedy text ({after!r})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".build/release/sparsekv")
    ap.add_argument("--cluster", help="coordinator endpoint (tcp://...) of a running coordinator --http")
    ap.add_argument("--http", help="its HTTP base URL")
    ap.add_argument("--serve-cluster", help="coordinator endpoint of a running cluster: start `serve --cluster` on it")
    ap.add_argument("--logs", help="with --serve-cluster: cluster/launch.sh's --logs DIR (its pids file); kills a worker at the end")
    ap.add_argument("--kv", default="fp32")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--overload", type=int, default=12)
    args = ap.parse_args()
    if args.cluster:
        print(f"== cluster at {args.http} (coordinator {args.cluster})", flush=True)
        run_checks(args, args.http, cluster_endpoint=args.cluster)
    elif args.serve_cluster:
        proc = subprocess.Popen([args.bin, "serve", "--http", "127.0.0.1:0", "--cluster", args.serve_cluster],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            line = proc.stdout.readline().strip()
            if not line.startswith("LISTENING "):
                sys.exit(f"serve --cluster did not start: {line!r}")
            base = line.split()[1]
            deadline = time.time() + 60
            while http("GET", base + "/health")[0] != 200 and time.time() < deadline:
                time.sleep(0.2)
            print(f"== sparsekv serve --cluster at {base} (coordinator {args.serve_cluster})", flush=True)
            model = openai.OpenAI(base_url=base + "/v1", api_key="none").models.list().data[0].id
            text = run_checks(args, base, cluster_endpoint=args.serve_cluster)
            if args.logs:
                kill_worker(args, base, model, text)
            proc.send_signal(signal.SIGTERM)
            check(proc.wait(60) == 0, "SIGTERM: serve --cluster exited with status 0")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    else:
        proc = subprocess.Popen([args.bin, "serve", "--http", "127.0.0.1:0", "--kv", args.kv, "--ctx", str(args.ctx),
                                 "-t", str(args.threads), "--parallel", "2", "--queue", "2"],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            line = proc.stdout.readline().strip()
            if not line.startswith("LISTENING "):
                sys.exit(f"serve did not start: {line!r}")
            base = line.split()[1]
            print(f"== sparsekv serve at {base}", flush=True)
            run_checks(args, base)
            print("== graceful shutdown", flush=True)
            got = {}
            def streaming():
                got["events"] = curl_sse(base, PROMPTS[3], 24)[1]
            t = threading.Thread(target=streaming)
            t.start()
            time.sleep(1.0)
            os.kill(proc.pid, signal.SIGTERM)
            t.join(120)
            code = proc.wait(60)
            check(got.get("events", "").rstrip().endswith("data: [DONE]"), "SIGTERM: the stream in flight finished with [DONE]")
            check(code == 0, f"SIGTERM: serve exited with status 0 ({code})")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if failures:
        print(f"FAILED: {len(failures)} checks", file=sys.stderr)
        sys.exit(1)
    print("all HTTP checks passed")


if __name__ == "__main__":
    main()
