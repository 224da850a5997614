import ArgumentParser
import Foundation
import Logging
import SparseKVCluster
import SparseKVEngine
import SparseKVServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve one local model, or a running cluster, over HTTP with OpenAI's API (like llama-server).",
        discussion: """
            Endpoints: POST /v1/chat/completions, POST /v1/completions ("stream": true for \
            server-sent events, one chunk per token), GET /v1/models, GET /health, GET /metrics \
            (Prometheus). Prints 'LISTENING http://HOST:PORT' on stdout once bound. SIGTERM or \
            SIGINT: stop taking connections, finish the requests in flight, exit.
            Requests run in one compute thread, interleaved a prefill chunk or a token at a \
            time, each with its own KV cache.
            With --cluster EP it serves a running cluster instead, as a client of its coordinator \
            (EP as the coordinator prints it, with --keys DIR / --insecure as for `generate --cluster`): \
            tokens stream from the coordinator as they are sampled, --model is read for the \
            tokenizer only, and the coordinator's --kv and --ctx apply. The coordinator can also \
            serve HTTP itself (sparsekv coordinator --http HOST:PORT). See README, HTTP API.
            """)

    @OptionGroup var common: ModelOptions

    @Option(help: ArgumentHelp("Address to serve HTTP on (port 0 picks a free one).", valueName: "HOST:PORT"))
    var http: String = "127.0.0.1:8080"

    @Option(help: kvHelp)
    var kv: String = "fp32"

    @OptionGroup var dictionary: DictionaryOption

    @Option(help: "Context length (positions) of each session.")
    var ctx: Int?

    @Option(help: "Sessions generating at once (interleaved); more wait in the queue.")
    var parallel: Int = 4

    @Option(help: "Requests that may wait for a session; beyond that the server answers 503.")
    var queue: Int = 16

    @Option(help: "The model id /v1/models lists (default: the model file's name without .gguf).")
    var alias: String?

    @Option(help: ArgumentHelp("Serve the cluster whose coordinator takes clients at this endpoint (tcp://HOST:PORT#KEY) instead of a local model; requests beyond --parallel + --queue outstanding get 503.",
                               valueName: "EP"))
    var cluster: String?

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        _ = try parseHTTPAddress(http)
        guard parallel >= 1 else { throw ValidationError("--parallel must be at least 1") }
        guard queue >= 0 else { throw ValidationError("--queue must be >= 0") }
        if let ctx { guard ctx >= 2 else { throw ValidationError("--ctx must be at least 2") } }
    }

    func run() async throws {
        let (host, port) = try parseHTTPAddress(http)
        let (gguf, logger) = try common.setUp()
        let tokenizer = try BPETokenizer(gguf: gguf)
        if let cluster {
            var options = try security.security().client()
            options.routingID = Array("http-api-\(ProcessInfo.processInfo.processIdentifier)".utf8)
            let backend = ClusterBackend(endpoint: cluster, tokenizer: tokenizer, modelName: alias ?? modelAlias(common.modelPath),
                                         contextLength: try LlamaConfig(gguf: gguf).contextLength, maxPending: parallel + queue,
                                         logger: logger, socketOptions: options)
            let bridge = BlockingThreadService(name: "http-bridge") { stop in try backend.runBridge(stop: stop) }
            let api = APIServer(backend: backend, metrics: ServerMetrics(), logger: logger)
            return try await HTTPServing.run(api: api, host: host, port: port, services: [bridge], logger: logger) { url in
                printOut("LISTENING \(url)")
            }
        }
        let model = try LlamaModel(gguf: gguf)
        let cacheType = try dictionary.cacheTypes([kv], model: model, modelPath: common.modelPath)[0]
        let hash = cacheType.codec?.dictionary.contentHash ?? ""
        let backend = LocalBackend(model: model, tokenizer: tokenizer, cacheType: cacheType,
                                   modelName: alias ?? modelAlias(common.modelPath), contextLength: ctx,
                                   maxActive: parallel, maxQueued: queue, dictionaryHash: hash, logger: logger)
        let api = APIServer(backend: backend, metrics: ServerMetrics(), logger: logger)
        try await HTTPServing.run(api: api, host: host, port: port, services: [LocalBackendService(backend: backend)],
                                  logger: logger) { url in printOut("LISTENING \(url)") }
    }
}

/// `--http HOST:PORT` as a validation error the CLI prints with its usage.
func parseHTTPAddress(_ s: String) throws -> (host: String, port: Int) {
    do { return try HTTPServing.parseAddress(s) } catch { throw ValidationError(error.localizedDescription) }
}

/// The model id served: the file name without `.gguf`.
func modelAlias(_ path: String) -> String {
    URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
}
