import Foundation
import Metrics
import Prometheus
import SparseKVCluster

/// The server's Prometheus metrics. Request, token and latency metrics go through
/// swift-metrics (with a Prometheus factory on this registry); the state of the backend
/// (sessions, KV bytes, workers, the coordinator's socket counters) is read at each
/// scrape.
///
/// Names (all prefixed `sparsekv_`):
/// - `http_requests_total{endpoint,status}`
/// - `prompt_tokens_total`, `generated_tokens_total`
/// - `prefill_seconds` (histogram, per request: arrival to first token),
///   `decode_token_seconds` (histogram, per token: gap between sampled tokens)
/// - `sessions_active`, `requests_queued`, `kv_cache_bytes`
/// - `worker_ready{worker}` (1 ready and alive, 0 not: loading, declared dead, gone)
/// - `worker_kv_cache_bytes{worker}` (a cluster: KV bytes each worker holds for the
///   sessions in flight, as the workers report them)
/// - `wire_bytes_total{peer,kind,direction}`, `wire_messages_total{peer,kind,direction}`:
///   the coordinator's socket counters; kind is control, activations, kv or dictionary,
///   direction sent or received
/// - `info{model,kv_cache,dictionary_hash}` = 1
public final class ServerMetrics: @unchecked Sendable {
    // @unchecked: `exported` is behind `lock`; the registry and factory are thread-safe.
    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let lock = NSLock()
    /// Counter values already added to the registry, by (peer, kind, direction, unit).
    private var exported: [String: UInt64] = [:]

    public init() {
        var f = PrometheusMetricsFactory(registry: registry)
        let latency: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(50), .milliseconds(100),
                                   .milliseconds(200), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10),
                                   .seconds(30), .seconds(60)]
        f.durationHistogramBuckets = ["sparsekv_prefill_seconds": latency, "sparsekv_decode_token_seconds": latency]
        factory = f
    }

    public func request(endpoint: String, status: Int) {
        Counter(label: "sparsekv_http_requests_total", dimensions: [("endpoint", endpoint), ("status", String(status))], factory: factory)
            .increment()
    }

    public func tokens(prompt: Int, generated: Int) {
        Counter(label: "sparsekv_prompt_tokens_total", factory: factory).increment(by: prompt)
        Counter(label: "sparsekv_generated_tokens_total", factory: factory).increment(by: generated)
    }

    public func prefill(_ d: Duration) {
        Metrics.Timer(label: "sparsekv_prefill_seconds", factory: factory).record(duration: d)
    }

    public func decodeToken(_ d: Duration) {
        Metrics.Timer(label: "sparsekv_decode_token_seconds", factory: factory).record(duration: d)
    }

    /// The text exposition, after reading the backend's state.
    public func render(backend: any InferenceBackend) -> String {
        let g = backend.gauges()
        registry.makeGauge(name: "sparsekv_sessions_active", help: "Sessions generating now").set(to: Double(g.activeSessions))
        registry.makeGauge(name: "sparsekv_requests_queued", help: "Requests waiting for a session").set(to: Double(g.queuedRequests))
        if let kv = g.kvCacheBytes {
            registry.makeGauge(name: "sparsekv_kv_cache_bytes", help: "Bytes held by the KV caches of the sessions in flight")
                .set(to: Double(kv))
        }
        registry.makeGauge(name: "sparsekv_info", labels: [("model", backend.modelName), ("kv_cache", g.kvCache),
                                                          ("dictionary_hash", g.dictionaryHash)],
                           help: "The model, KV cache type and CSR dictionary hash this server runs").set(to: 1)
        for (worker, ready) in g.workersReady {
            registry.makeGauge(name: "sparsekv_worker_ready", labels: [("worker", worker)], help: "1 when the worker is registered and ready")
                .set(to: ready ? 1 : 0)
        }
        for (worker, bytes) in g.workerKVBytes {
            registry.makeGauge(name: "sparsekv_worker_kv_cache_bytes", labels: [("worker", worker)],
                               help: "KV bytes the worker holds for the sessions in flight, as it reported them").set(to: Double(bytes))
        }
        if let traffic = g.traffic { export(traffic) }
        return registry.emitToString()
    }

    /// The text exposition of a process without a backend (a worker's `--metrics`): its
    /// socket counters.
    public func render(traffic: TrafficSnapshot) -> String {
        export(traffic)
        return registry.emitToString()
    }

    /// Adds what the socket counters gained since the last scrape to the Prometheus counters.
    private func export(_ traffic: TrafficSnapshot) {
        lock.withLock {
            for (peer, byKind) in traffic.byPeer {
                for kind in TrafficCategory.allCases {
                    let t = byKind[kind]
                    let values: [(String, String, UInt64)] = [
                        ("bytes", "sent", t.sentBytes), ("bytes", "received", t.receivedBytes),
                        ("messages", "sent", t.sentMessages), ("messages", "received", t.receivedMessages),
                    ]
                    for (unit, direction, value) in values {
                        let key = "\(peer)|\(kind.rawValue)|\(direction)|\(unit)"
                        let before = exported[key] ?? 0
                        let counter = registry.makeCounter(name: "sparsekv_wire_\(unit)_total",
                                                           labels: [("peer", peer), ("kind", kind.rawValue), ("direction", direction)],
                                                           help: "This process's socket counters (a coordinator's: every worker and client link): \(unit) by peer, kind and direction")
                        if value > before {
                            counter.increment(by: Int64(clamping: value - before))
                            exported[key] = value
                        }
                    }
                }
            }
        }
    }
}
