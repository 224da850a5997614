import Foundation
import Logging
import SparseKVCluster
import SparseKVEngine
import SparseKVServer

extension CoordinatorCommand {
    /// `coordinator --http`: the coordinator loop, a bridge into it and the HTTP API in
    /// one service group; SIGTERM/SIGINT stop the HTTP server first (requests in flight
    /// finish), then the bridge, then the coordinator (which tells the workers).
    func serveHTTP(_ config: CoordinatorConfiguration, address: String, logger: Logger) async throws {
        let (host, port) = try parseHTTPAddress(address)
        let gguf = try GGUFFile(path: config.modelPath)
        let tokenizer = try BPETokenizer(gguf: gguf)
        let modelContext = try LlamaConfig(gguf: gguf).contextLength
        let coordinator = UncheckedSendable(try Coordinator(configuration: config, logger: logger))
        printOut("LISTENING \(coordinator.value.boundEndpoint)")
        var options = config.security.client()
        options.routingID = ClusterBackend.routingID
        let backend = ClusterBackend(
            endpoint: coordinator.value.boundEndpoint, tokenizer: tokenizer, modelName: modelAlias(config.modelPath),
            contextLength: min(config.contextLength ?? modelContext, modelContext), counters: coordinator.value.counters,
            logger: logger, socketOptions: options)
        let loop = BlockingThreadService(name: "coordinator") { stop in
            try coordinator.value.run(stop: stop) { endpoint in printOut("READY \(endpoint)") }
        }
        let bridge = BlockingThreadService(name: "http-bridge") { stop in try backend.runBridge(stop: stop) }
        let api = APIServer(backend: backend, metrics: ServerMetrics(), logger: logger)
        try await HTTPServing.run(api: api, host: host, port: port, services: [loop, bridge], logger: logger) { url in
            printOut("HTTP \(url)")
        }
    }
}

/// Hands a non-Sendable value to one other thread that becomes its only user (the
/// coordinator, built here and then driven by its service thread).
final class UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
