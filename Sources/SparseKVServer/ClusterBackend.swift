import Foundation
import Logging
import SparseKVCluster
import SparseKVEngine

/// Runs completions on a cluster, from inside the coordinator's process
/// (`sparsekv coordinator --http`).
///
/// Requests go to the coordinator as ordinary generate requests, over a DEALER socket
/// connected to the coordinator's own ROUTER (routing id ``routingID``), owned by one
/// bridge thread; replies come back the same way. Tokens stream through the
/// coordinator's token tap (``tap(client:requestID:token:)``), which the coordinator
/// calls on its thread as each token is sampled: no new wire message is needed. A
/// cancelled job (stop sequence, client gone) answers false to the tap, and the
/// coordinator ends the session with stop reason "cancelled".
///
/// Sessions interleave in the coordinator as its own clients' do (up to its
/// `maxConcurrentSessions`); at most `maxPending` requests are outstanding here, beyond
/// that a request gets 503.
public final class ClusterBackend: InferenceBackend, @unchecked Sendable {
    // @unchecked: the mutable state is behind `lock`; the socket is used by the bridge
    // thread only.
    public static let routingID = Array("http-api".utf8)
    public let modelName: String
    public let tokenizer: BPETokenizer
    public let contextLength: Int
    public var acceptsTokenPrompts: Bool { false }
    public let maxPending: Int
    private let endpoint: String
    /// Options of the bridge's socket: the coordinator's own CURVE key pair when its links are keyed.
    private let socketOptions: ZMQSocketOptions
    private let workerCount: Int
    private let kvCache: String
    private let dictionaryHash: String
    private let counters: ByteCounters
    private let logger: Logger
    private let lock = NSLock()
    private var jobs: [UInt64: ClusterJob] = [:]
    private var outbox: [ClusterJob] = []
    private var nextRequestID: UInt64 = 1
    private var readyWorkers: [String: Bool] = [:]
    private var ready = false
    private var stopping = false
    private var bridgeEnded = true

    /// - Parameters:
    ///   - endpoint: the coordinator's bound ROUTER endpoint.
    ///   - counters: the coordinator's byte counters (exported in /metrics).
    public init(endpoint: String, tokenizer: BPETokenizer, modelName: String, contextLength: Int, workerCount: Int,
                kvCache: String, dictionaryHash: String, counters: ByteCounters, maxPending: Int = 20, logger: Logger,
                socketOptions: ZMQSocketOptions = ZMQSocketOptions()) {
        self.socketOptions = socketOptions
        self.endpoint = endpoint
        self.tokenizer = tokenizer
        self.modelName = modelName
        self.contextLength = contextLength
        self.workerCount = workerCount
        self.kvCache = kvCache
        self.dictionaryHash = dictionaryHash
        self.counters = counters
        self.maxPending = maxPending
        self.logger = logger
    }

    // MARK: - Coordinator hooks (called on the coordinator's thread)

    /// The coordinator's token tap: forwards a token of one of our requests to its stream;
    /// false asks the coordinator to end the session.
    public func tap(client: [UInt8], requestID: UInt64, token: Int32) -> Bool {
        guard client == Self.routingID, let job = lock.withLock({ jobs[requestID] }) else { return true }
        guard !job.isCancelled else { return false }
        job.continuation.yield(.token(token))
        return true
    }

    /// The cluster is serving: every worker loaded its layers and acked the dictionary.
    public func clusterReady(workers: [String]) {
        lock.withLock {
            ready = true
            for w in workers { readyWorkers[w] = true }
        }
    }

    // MARK: - InferenceBackend

    public func notReadyReason() -> String? {
        lock.withLock {
            if stopping { return "shutting down" }
            if bridgeEnded { return "the bridge to the coordinator is not running" }
            return ready ? nil : "waiting for \(workerCount) workers to load their layers and ack the dictionary"
        }
    }

    public func start(_ job: GenerationJob) throws(APIError) -> GenerationHandle {
        guard job.promptText != nil else {
            throw APIError.invalid("the cluster's coordinator takes prompts as text", param: "prompt")
        }
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, any Error>.makeStream()
        let admitted: Result<ClusterJob, APIError> = lock.withLock {
            if stopping { return .failure(.notReady("shutting down")) }
            if !ready { return .failure(.notReady("the cluster is starting")) }
            guard jobs.count < maxPending else { return .failure(.overloaded(queued: jobs.count)) }
            let j = ClusterJob(requestID: nextRequestID, job: job, continuation: continuation)
            nextRequestID += 1
            jobs[j.requestID] = j
            outbox.append(j)
            return .success(j)
        }
        let j = try admitted.get()
        continuation.onTermination = { _ in j.cancel() }
        return GenerationHandle(events: stream, cancel: { j.cancel() })
    }

    public func gauges() -> BackendGauges {
        var g = BackendGauges()
        lock.withLock {
            g.activeSessions = jobs.count - outbox.count
            g.queuedRequests = outbox.count
            g.workersReady = readyWorkers
        }
        g.kvCache = kvCache
        g.dictionaryHash = dictionaryHash
        g.traffic = counters.snapshot()
        return g
    }

    // MARK: - Bridge thread

    /// Runs the bridge until `stop` is raised and no request is outstanding (or 30 s more).
    public func runBridge(stop: StopSignal) throws {
        let context = try ZMQContext()
        var options = socketOptions
        options.routingID = Self.routingID
        let socket = try CountedSocket(context: context, kind: .dealer, counters: ByteCounters(), peerLabel: coordinatorPeerID, options: options)
        defer { socket.close() }
        try socket.connect(endpoint)
        lock.withLock { bridgeEnded = false }
        defer { lock.withLock { bridgeEnded = true } }
        var stopDeadline: ContinuousClock.Instant?
        while true {
            if stop.isRaised {
                lock.withLock { stopping = true }
                stopDeadline = stopDeadline ?? .now + .seconds(30)
                if lock.withLock({ jobs.isEmpty }) || ContinuousClock.now > stopDeadline! { break }
            }
            for j in lock.withLock({ () -> [ClusterJob] in defer { outbox.removeAll() }; return outbox }) {
                send(j, on: socket)
            }
            guard let received = try socket.receive(timeout: .milliseconds(5)) else { continue }
            guard case .success(let m) = received.result, let j = lock.withLock({ jobs[m.requestID] }) else { continue }
            switch m.body {
            case .generateReply(let r): finish(j, r)
            case .error(let e): fail(j, code: e.code, message: e.message)
            default: fail(j, code: .unexpectedMessage, message: "the coordinator answered \(m.kind)")
            }
        }
        for j in lock.withLock({ Array(jobs.values) }) {
            j.continuation.finish(throwing: APIError.generationFailed("the server stopped"))
        }
        lock.withLock { jobs.removeAll() }
    }

    private func send(_ j: ClusterJob, on socket: CountedSocket) {
        let s = j.job.sampling
        let body = GenerateRequestBody(prompt: j.job.promptText ?? "", chat: false, maxTokens: j.job.maxTokens,
                                       temperature: s.temperature, topK: s.topK, topP: s.topP, seed: s.seed, ignoreEOS: j.job.ignoreEOS)
        do {
            try socket.send(WireMessage(.generateRequest(body), requestID: j.requestID), timeout: .seconds(10))
        } catch {
            fail(j, code: .unreachable, message: "cannot reach the coordinator: \(error.localizedDescription)")
        }
    }

    private func finish(_ j: ClusterJob, _ r: GenerateReplyBody) {
        lock.withLock { jobs[j.requestID] = nil }
        let summary = GenerationSummary(
            stopReason: r.stopReason, promptTokens: r.promptTokens.count, completionTokens: r.generatedTokens.count,
            prefillSeconds: Double(r.prefillNanoseconds) / 1e9, decodeSeconds: Double(r.decodeNanoseconds) / 1e9,
            kvCache: r.kvCache, kvCacheBytes: r.kvCacheBytes, workers: workerCount,
            activationBytesSent: r.activationBytesSent, activationBytesReceived: r.activationBytesReceived,
            kvTransferBytes: r.kvTransferBytes)
        j.continuation.yield(.finished(summary))
        j.continuation.finish()
    }

    private func fail(_ j: ClusterJob, code: WireErrorCode, message: String) {
        lock.withLock { jobs[j.requestID] = nil }
        let e: APIError
        switch code {
        case .capacityExceeded: e = .invalid("the coordinator refused the prompt: \(message)", param: "messages", code: "context_length_exceeded")
        case .unexpectedMessage: e = .notReady(message)
        default: e = .generationFailed("\(code): \(message)")
        }
        logger.warning("request \(j.requestID) failed: \(message)")
        j.continuation.finish(throwing: e)
    }
}
