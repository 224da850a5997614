import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SparseKVCluster

/// `GET /metrics` for a process that serves no API (a worker with `--metrics`): its
/// socket counters by peer, kind and direction, read at each scrape.
public enum MetricsEndpoint {
    /// Runs `services` and the metrics endpoint in one service group until SIGTERM/SIGINT.
    public static func run(counters: ByteCounters, host: String, port: Int, services: [any Service], logger: Logger,
                           onListening: @escaping @Sendable (String) -> Void) async throws {
        let metrics = ServerMetrics()
        let router = Router(context: BasicRequestContext.self)
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: metrics.render(traffic: counters.snapshot()))))
        }
        try await HTTPServing.run(router: router, serverName: "sparsekv-worker", host: host, port: port, services: services,
                                  logger: logger, onListening: onListening)
    }
}
