import Foundation
import Logging
import SparseKVCluster
import SparseKVEngine

/// Runs completions on a cluster through its coordinator: inside the coordinator's process
/// (`sparsekv coordinator --http`) or from another process (`sparsekv serve --cluster EP`).
///
/// One bridge thread owns a DEALER connected to the coordinator's ROUTER and speaks the
/// wire protocol as any client does: each request is a generate request with `stream` set,
/// so the coordinator sends a generateToken message per sampled token (the tokens reach the
/// HTTP response as they are sampled), then the reply. A cancelled job (stop sequence,
/// client gone) sends generateCancel; the coordinator ends the session with stop reason
/// "cancelled". The bridge also asks for the coordinator's stats every
/// ``statsInterval`` and before each /metrics scrape: readiness, the context length, the
/// KV cache type, each worker's readiness, liveness and KV bytes come from them (and, from
/// another process, the coordinator's socket counters).
///
/// Sessions interleave in the coordinator as its own clients' do (up to its
/// `maxConcurrentSessions`); at most `maxPending` requests are outstanding here, beyond
/// that a request gets 503.
public final class ClusterBackend: InferenceBackend, @unchecked Sendable {
    // @unchecked: the mutable state is behind `lock`; the socket is used by the bridge
    // thread only.
    /// The bridge's routing id inside the coordinator's process.
    public static let routingID = Array("http-api".utf8)
    /// How often the bridge asks for the coordinator's stats when nobody scrapes.
    public static let statsInterval: Duration = .milliseconds(500)
    /// Stats older than this mean the coordinator stopped answering: not ready.
    public static let staleAfter: Duration = .seconds(5)
    public let modelName: String
    public let tokenizer: BPETokenizer
    public var contextLength: Int { lock.withLock { (status?.contextLength).flatMap { $0 > 0 ? $0 : nil } ?? modelContextLength } }
    public var acceptsTokenPrompts: Bool { false }
    public let maxPending: Int
    private let endpoint: String
    private let modelContextLength: Int
    /// Options of the bridge's socket (CURVE client keys when the links are keyed; its routing id).
    private let socketOptions: ZMQSocketOptions
    /// The coordinator's own byte counters when in its process; nil from another process
    /// (the stats replies carry them then).
    private let counters: ByteCounters?
    private let logger: Logger
    private let lock = NSLock()
    private var jobs: [UInt64: ClusterJob] = [:]
    private var outbox: [ClusterJob] = []
    private var nextRequestID: UInt64 = 1
    /// The latest stats reply, and when it came.
    private var stats: StatsReplyBody?
    private var statsAt: ContinuousClock.Instant?
    private var status: ClusterStatus? { stats?.cluster }
    /// Every worker the stats ever listed, in first-seen order (one that left reports 0).
    private var seenWorkers: [String] = []
    /// Scrapes waiting for the next stats reply.
    private var statsWaiters: [CheckedContinuation<Void, Never>] = []
    private var handshakeFailure: String?
    private var stopping = false
    private var bridgeEnded = true

    /// - Parameters:
    ///   - endpoint: the coordinator's client endpoint (its ROUTER; `#KEY` under CURVE).
    ///   - contextLength: the model's context, used until the coordinator's stats tell its own.
    ///   - counters: the coordinator's byte counters when it runs in this process.
    ///   - socketOptions: the bridge socket's options: CURVE client keys and a routing id.
    public init(endpoint: String, tokenizer: BPETokenizer, modelName: String, contextLength: Int,
                counters: ByteCounters? = nil, maxPending: Int = 20, logger: Logger, socketOptions: ZMQSocketOptions) {
        self.socketOptions = socketOptions
        self.endpoint = endpoint
        self.tokenizer = tokenizer
        self.modelName = modelName
        self.modelContextLength = contextLength
        self.counters = counters
        self.maxPending = maxPending
        self.logger = logger
    }

    // MARK: - InferenceBackend

    public func notReadyReason() -> String? {
        lock.withLock { notReadyLocked() }
    }

    private func notReadyLocked() -> String? {
        if stopping { return "shutting down" }
        if bridgeEnded { return "the bridge to the coordinator is not running" }
        if let handshakeFailure { return "the coordinator at \(endpoint) refused this server's CURVE key: \(handshakeFailure)" }
        guard let stats, let statsAt else { return "waiting for the coordinator at \(endpoint) to answer" }
        if ContinuousClock.now - statsAt > Self.staleAfter { return "the coordinator at \(endpoint) has not answered for \(ContinuousClock.now - statsAt)" }
        guard stats.cluster.serving else {
            let waiting = stats.cluster.workers.filter { !$0.ready }.map(\.worker)
            return "the cluster is starting (\(stats.cluster.workers.count) workers registered"
                + (waiting.isEmpty ? ")" : ", waiting for \(waiting.joined(separator: ", ")) to load their layers and ack the dictionary)")
        }
        return nil
    }

    public func start(_ job: GenerationJob) throws(APIError) -> GenerationHandle {
        guard job.promptText != nil else {
            throw APIError.invalid("the cluster's coordinator takes prompts as text", param: "prompt")
        }
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, any Error>.makeStream()
        let admitted: Result<ClusterJob, APIError> = lock.withLock {
            if let why = notReadyLocked() { return .failure(.notReady(why)) }
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
            let listed = Dictionary(status?.workers.map { ($0.worker, $0) } ?? [], uniquingKeysWith: { a, _ in a })
            for w in seenWorkers {
                g.workersReady[w] = listed[w].map { $0.ready && $0.alive } ?? false
                g.workerKVBytes[w] = listed[w]?.kvBytes ?? 0
            }
            g.kvCacheBytes = stats?.kvCacheBytes
            g.kvCache = status?.kvSpec ?? ""
            g.dictionaryHash = status?.dictionaryHash ?? ""
            g.traffic = counters?.snapshot() ?? stats?.traffic
        }
        return g
    }

    public func refreshGauges() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let queued = lock.withLock { () -> Bool in
                guard !bridgeEnded else { return false }
                statsWaiters.append(c)
                return true
            }
            if !queued { c.resume() }
        }
    }

    // MARK: - Bridge thread

    /// Runs the bridge until `stop` is raised and no request is outstanding (or 30 s more).
    public func runBridge(stop: StopSignal) throws {
        let context = try ZMQContext()
        var options = socketOptions
        options.linger = .milliseconds(100)
        let socket = try CountedSocket(context: context, kind: .dealer, counters: ByteCounters(), peerLabel: coordinatorPeerID, options: options)
        defer { socket.close() }
        if options.curve != nil { try socket.watchHandshakes() }
        try socket.connect(endpoint)
        lock.withLock { bridgeEnded = false }
        defer {
            let waiters = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
                bridgeEnded = true
                defer { statsWaiters.removeAll() }
                return statsWaiters
            }
            for w in waiters { w.resume() }
        }
        var poll = StatsPoll()
        var stopDeadline: ContinuousClock.Instant?
        while true {
            if stop.isRaised {
                lock.withLock { stopping = true }
                stopDeadline = stopDeadline ?? .now + .seconds(30)
                if lock.withLock({ jobs.isEmpty }) || ContinuousClock.now > stopDeadline! { break }
            }
            if options.curve != nil {
                do { try socket.checkHandshakes() } catch {
                    logger.error("\(error.localizedDescription)")
                    lock.withLock { handshakeFailure = error.localizedDescription }
                }
            }
            let (toSend, toCancel, scrapes) = lock.withLock { () -> ([ClusterJob], [ClusterJob], Bool) in
                defer { outbox.removeAll() }
                return (outbox, jobs.values.filter { $0.isCancelled && !$0.cancelSent }, !statsWaiters.isEmpty)
            }
            for j in toSend { send(j, on: socket) }
            for j in toCancel {
                j.cancelSent = true
                _ = try? socket.send(WireMessage(.generateCancel, requestID: j.requestID), timeout: .seconds(1))
            }
            if let id = poll.due(now: .now, wanted: scrapes) {
                if (try? socket.send(WireMessage(.statsRequest, requestID: id), timeout: .milliseconds(100))) == nil {
                    poll.unsent()
                }
            }
            if poll.expired(now: .now) { answerScrapes() }
            guard let received = try socket.receive(timeout: .milliseconds(5)) else { continue }
            guard case .success(let m) = received.result else { continue }
            if case .statsReply(let s) = m.body {
                if poll.answered(m.requestID) { took(s) }
                continue
            }
            guard let j = lock.withLock({ jobs[m.requestID] }) else { continue }
            switch m.body {
            case .generateToken(let token): j.continuation.yield(.token(token))
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

    private func took(_ s: StatsReplyBody) {
        lock.withLock {
            stats = s
            statsAt = .now
            handshakeFailure = nil
            for w in s.cluster.workers where !seenWorkers.contains(w.worker) { seenWorkers.append(w.worker) }
        }
        answerScrapes()
    }

    private func answerScrapes() {
        let waiters = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            defer { statsWaiters.removeAll() }
            return statsWaiters
        }
        for w in waiters { w.resume() }
    }

    private func send(_ j: ClusterJob, on socket: CountedSocket) {
        let s = j.job.sampling
        let body = GenerateRequestBody(prompt: j.job.promptText ?? "", chat: false, maxTokens: j.job.maxTokens,
                                       temperature: s.temperature, topK: s.topK, topP: s.topP, seed: s.seed,
                                       ignoreEOS: j.job.ignoreEOS, stream: true)
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
            kvCache: r.kvCache, kvCacheBytes: r.kvCacheBytes, workers: r.kvBytesByWorker.count,
            activationBytesSent: r.activationBytesSent, activationBytesReceived: r.activationBytesReceived,
            kvTransferBytes: r.kvTransferBytes, kvBytesByWorker: r.kvBytesByWorker)
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
