import ArgumentParser
import Foundation
import SparseKVCluster
import SparseKVServer

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Serve a contiguous range of layers for a coordinator.")

    @OptionGroup var common: ModelOptions

    @Option(help: "The coordinator's endpoint, e.g. tcp://127.0.0.1:5555 (under CURVE as it prints it, ending in #<its public key>).")
    var coordinator: String

    @Option(help: "Memory budget for weights, caches and the dictionary (bytes; K/M/G suffixes).")
    var memory: String = "4G"

    @Option(help: "Where to listen for activations and control (a :0 port picks a free one).")
    var listen: String = "tcp://127.0.0.1:0"

    @Option(help: "The endpoint other processes connect to, when it is not the bound one (e.g. tcp://w1:6001 in a container; listen on tcp://0.0.0.0:6001).")
    var advertise: String?

    @Option(help: "Worker id (A-Z a-z 0-9 . _ -); default worker-<pid>.")
    var id: String?

    @OptionGroup var heartbeat: HeartbeatOptions
    @Option(help: ArgumentHelp("Serve Prometheus metrics (this worker's socket counters by peer, kind and direction) on GET /metrics; prints 'METRICS http://HOST:PORT'.",
                               valueName: "HOST:PORT"))
    var metrics: String?

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        guard parseBytes(memory) != nil else { throw ValidationError("--memory must be a byte count such as 2G or 536870912") }
        if let metrics { _ = try parseHTTPAddress(metrics) }
    }

    func run() async throws {
        let security = try security.security()
        let (_, logger) = try common.setUp()
        var config = WorkerConfiguration(
            coordinator: coordinator, modelPath: common.modelPath, memoryBudgetBytes: parseBytes(memory) ?? 0,
            listen: listen, id: id ?? "worker-\(ProcessInfo.processInfo.processIdentifier)")
        config.advertise = advertise
        config.heartbeat = heartbeat.settings
        config.security = security
        if let metrics {
            let (host, port) = try parseHTTPAddress(metrics)
            let worker = UncheckedSendable(try Worker(configuration: config, logger: logger))
            printOut("LISTENING \(worker.value.boundEndpoint)")
            let loop = BlockingThreadService(name: "worker") { stop in try worker.value.run(stop: stop) }
            return try await MetricsEndpoint.run(counters: worker.value.counters, host: host, port: port, services: [loop],
                                                 logger: logger) { url in printOut("METRICS \(url)") }
        }
        let stop = StopSignal()
        let sources = stopOnSignals(stop)
        defer { sources.forEach { $0.cancel() } }
        let worker = try Worker(configuration: config, logger: logger)
        printOut("LISTENING \(worker.boundEndpoint)")
        try worker.run(stop: stop)
    }
}
