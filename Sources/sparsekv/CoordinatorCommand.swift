import ArgumentParser
import Foundation
import SparseKVCluster
import SparseKVEngine

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Register workers, plan shards, broadcast the dictionary and serve generate requests.",
        discussion: """
            Prints 'READY <endpoint>' on stdout once every worker has loaded its layers and acknowledged the dictionary.
            With --http HOST:PORT the coordinator also serves OpenAI's API (the endpoints of `sparsekv serve`) \
            from its own process, printing 'HTTP http://HOST:PORT' once bound: each sampled token streams from \
            the coordinator's session loop to the HTTP response, and GET /health answers 200 once the cluster is ready.
            """)

    @OptionGroup var common: ModelOptions

    @Option(help: "Endpoint to bind for workers and clients (a :0 port picks a free one).")
    var listen: String = "tcp://127.0.0.1:5555"

    @Option(help: "Workers to wait for.")
    var workers: Int = 3

    @Option(help: kvHelp)
    var kv: String = "fp32"

    @OptionGroup var dictionary: DictionaryOption

    @Option(help: "Context length (positions) of each session.")
    var ctx: Int?

    @Option(help: ArgumentHelp("Prefill -> decode handoff: the first K workers prefill, the other K decode (--workers must be 2K); each session's KV moves between them after its prompt.",
                               valueName: "K"))
    var prefillWorkers: Int = 0

    @Option(help: "With --prefill-workers: after each handoff, send the same KV again in this encoding (fp16), checked and discarded, as a measured baseline.")
    var handoffBaseline: String?

    @Option(help: ArgumentHelp("Also serve OpenAI's HTTP API on this address (see `sparsekv serve --help`).", valueName: "HOST:PORT"))
    var http: String?

    @Flag(help: "Measure replication: each worker streams every decoded token's KV to a peer (with a handoff, its counterpart), which checks and discards it; see the kv counters.")
    var replicate = false

    @Option(help: ArgumentHelp("Kept KV replicas per worker: 1 keeps a live copy of each worker's KV (its prompt, then every decoded token) on the next worker, so a failover installs it instead of recomputing; 0 keeps none. Default: 1 with two workers or more in the pipeline that decodes (with --prefill-workers, the decode workers keep each other's replicas).",
                               valueName: "N"))
    var replicas: Int?

    @OptionGroup var heartbeat: HeartbeatOptions

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        guard workers >= 1 else { throw ValidationError("--workers must be at least 1") }
        guard prefillWorkers == 0 || workers == 2 * prefillWorkers else {
            throw ValidationError("--prefill-workers \(prefillWorkers) needs --workers \(2 * prefillWorkers) (one decode worker per prefill worker)")
        }
        if let ctx { guard ctx >= 1 else { throw ValidationError("--ctx must be at least 1") } }
        if let replicas { guard (0...1).contains(replicas) else { throw ValidationError("--replicas must be 0 or 1, not \(replicas)") } }
        if let http { _ = try parseHTTPAddress(http) }
    }

    func run() async throws {
        let security = try security.security()
        let (_, logger) = try common.setUp()
        var dictPath: String?
        if (try? KVCacheFormats.format(spec: kv))?.needsDictionary == true {
            let path = dictionary.dict ?? DictionaryOption.defaultPath(model: common.modelPath)
            guard FileManager.default.fileExists(atPath: path) else { throw CLIError.dictionaryMissing(path, defaulted: dictionary.dict == nil) }
            dictPath = path
        }
        var config = CoordinatorConfiguration(listen: listen, modelPath: common.modelPath, dictionaryPath: dictPath, workerCount: workers)
        config.kvSpec = kv
        config.contextLength = ctx
        config.prefillWorkers = prefillWorkers
        config.handoffBaseline = handoffBaseline ?? ""
        config.replicate = replicate
        config.replicas = replicas
        config.heartbeat = heartbeat.settings
        config.security = security
        if let http { return try await serveHTTP(config, address: http, logger: logger) }
        let stop = StopSignal()
        let sources = stopOnSignals(stop)
        defer { sources.forEach { $0.cancel() } }
        let coordinator = try Coordinator(configuration: config, logger: logger)
        printOut("LISTENING \(coordinator.boundEndpoint)")
        try coordinator.run(stop: stop) { endpoint in
            printOut("READY \(endpoint)")
        }
    }
}
