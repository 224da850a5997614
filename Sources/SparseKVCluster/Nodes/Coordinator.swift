import Foundation
import Logging
import SparseKVEngine

/// The coordinator process: registers workers, plans contiguous shards by memory budget,
/// broadcasts the dictionary (and waits for every worker's ack of its hash), then serves
/// generate requests by driving hidden states through the worker pipeline. It holds the
/// tokenizer, embeddings, final norm, LM head and sampling.
///
/// KV moves between workers (a drain, a prefill -> decode handoff) are in
/// Coordinator+Transfers.swift, heartbeats and failover in Coordinator+Failover.swift,
/// sending in Coordinator+Sending.swift.
///
/// Sockets: one ROUTER bound at `listen` takes registrations, replies, returning
/// activations and client requests; one DEALER per worker (routing id "coordinator")
/// carries assignments, the dictionary, activations into the first worker, and control.
public final class Coordinator {
    public let configuration: CoordinatorConfiguration
    public let counters = ByteCounters()
    /// The endpoint the ROUTER is bound to (with the chosen port).
    public let boundEndpoint: String
    let logger: Logger
    let model: LlamaModel
    private let tokenizer: BPETokenizer
    let contextLength: Int
    /// Weights of one layer plus one session's full-context fp32 cache for it.
    let bytesPerLayer: UInt64
    let dictionary: (hash: String, gguf: [UInt8])?
    let cacheKind: String
    private let context: ZMQContext
    /// Checks the keys of connecting workers and clients (CURVE only).
    private let zap: ZAPHandler?
    let router: CountedSocket

    // MARK: - State

    enum Phase: Equatable { case registering, starting, serving }

    struct WorkerState {
        let id: String
        let routingID: [UInt8]
        let endpoint: Endpoint
        let budget: UInt64
        var link: CountedSocket?
        var layers: Range<Int>?
        /// The pieces of `layers` the worker holds separate caches for (see Worker).
        var segments: [Range<Int>] = []
        /// 0, or 1 for the decode pipeline of a prefill -> decode handoff.
        var pipeline = 0
        var ready = false
        var dictionaryAcked = false
    }

    struct Request {
        let client: [UInt8]
        let requestID: UInt64
        var session: GenerationSession
        var deadline: ContinuousClock.Instant
        var sentBytes: UInt64 = 0
        var receivedBytes: UInt64 = 0
        /// The pipeline the session's KV lives on.
        var pipeline = 0
        /// States sent and not yet back.
        var inFlight = false
        /// States held back while the session's KV moves (drain, handoff).
        var parked: ActivationsBody?
        /// The session's KV bytes on the workers after the latest step.
        var kvBytes: UInt64 = 0
        var transferBytes: UInt64 = 0
        var transferNanoseconds: UInt64 = 0
        /// The measured baseline of a handoff (`handoffBaseline`).
        var baselineBytes: UInt64 = 0
        var baselineNanoseconds: UInt64 = 0
        /// Decode time spent parked while KV moved (a handoff, a drain): not decoding.
        var pausedNanoseconds: UInt64 = 0
        var pausedSince: ContinuousClock.Instant?
        /// Whether the workers stream this session's decoded tokens (`replicate`).
        var streaming = false
        /// When the running handoff of this session started.
        var handoffStarted: ContinuousClock.Instant?
        /// The request id its activations carry; a restart takes a new one, so states and
        /// errors of the pipeline before a failover are recognised and dropped.
        var wireID: UInt64 = 0
        /// Waiting for a failover to finish; its KV is rebuilt then.
        var recovering = false
        /// When the latest states came back (a step ended).
        var lastStep = ContinuousClock.now
        /// The failover's start of the rebuild, until the session generates again.
        var recoveryStarted: ContinuousClock.Instant?
        /// The last step before the death, while a failover lasts.
        var stalledSince: ContinuousClock.Instant?
        /// Kept replicas of this session's KV (Coordinator+Replicas.swift), requested once
        /// per plan at its first decode step.
        var replicas: [ReplicaCopy] = []
        var replicated = false
        /// A failover installing replicas: installs not yet acked, and the fewest tokens
        /// an installed replica holds.
        var pendingInstalls = 0
        var installedTokens: Int?
        /// Token streaming and cancel (Coordinator+TokenTap.swift); KV bytes per worker.
        var streamTokens = false
        var cancelRequested = false
        var kvBytesByWorker: [WorkerKVBytes] = []
    }

    var phase = Phase.registering
    var workers: [WorkerState] = []
    var active: [UInt64: Request] = [:]
    var waiting: [Request] = []
    private var nextSessionID: UInt64 = 1
    /// The drain in progress, if any.
    var drain: DrainState?
    /// kvRequests sent and not yet acknowledged, by their request id.
    var pendingTransfers: [UInt64: PendingTransfer] = [:]
    var nextControlID: UInt64 = 1 << 48
    /// Liveness of every registered worker (Coordinator+Failover.swift).
    var monitor: HeartbeatMonitor
    /// The failover in progress, if any.
    var recovery: FailoverTracker?
    /// Why the cluster cannot serve any more (a death it could not recover from).
    var broken: String?
    /// During a failover: the dead workers' segments, and whether every live worker kept
    /// its caches (so replicas can stand in for the dead ones' KV).
    var lostSegments: [String: [Range<Int>]] = [:]
    var failoverKeepsCaches = true

    /// Loads the coordinator's part of the model and the dictionary, and binds.
    public init(configuration: CoordinatorConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        monitor = HeartbeatMonitor(settings: configuration.heartbeat)
        guard configuration.heartbeat.interval > .zero, configuration.heartbeat.liveness >= 1 else {
            throw NodeError.badConfiguration("the heartbeat interval must be positive and the liveness at least 1")
        }
        guard configuration.workerCount >= 1 else { throw NodeError.badConfiguration("--workers must be at least 1") }
        guard (configuration.replicas ?? 1) >= 0, (configuration.replicas ?? 1) <= 1 else {
            throw NodeError.badConfiguration("--replicas must be 0 or 1, not \(configuration.replicas ?? 1)")
        }
        guard ["", "fp16"].contains(configuration.handoffBaseline) else {
            throw NodeError.badConfiguration("--handoff-baseline must be fp16 (or absent), not '\(configuration.handoffBaseline)'")
        }
        guard configuration.prefillWorkers == 0 || configuration.workerCount == 2 * configuration.prefillWorkers else {
            throw NodeError.badConfiguration("--prefill-workers \(configuration.prefillWorkers) needs --workers \(2 * configuration.prefillWorkers): a decode worker for each prefill worker")
        }
        let gguf = try GGUFFile(path: configuration.modelPath)
        model = try LlamaModel(gguf: gguf, layers: 0..<0, embeddings: true, head: true)
        tokenizer = try BPETokenizer(gguf: gguf)
        let c = model.config
        contextLength = min(configuration.contextLength ?? c.contextLength, c.contextLength)
        guard contextLength >= 1 else { throw NodeError.badConfiguration("--ctx must be at least 1") }
        let oneLayer = try LlamaModel(gguf: gguf, layers: 0..<min(1, c.layerCount), embeddings: false, head: false)
        bytesPerLayer = UInt64(oneLayer.weightBytes + contextLength * c.kvDim * 2 * MemoryLayout<Float>.size)
        // Check the spec here, with the dictionary, so a typo fails before any worker loads.
        if configuration.kvSpec.lowercased().hasPrefix(WireProtocol.csrEncoding) {
            guard let path = configuration.dictionaryPath else {
                throw NodeError.badConfiguration("--kv \(configuration.kvSpec) needs --dict PATH")
            }
            let d = try CSRDictionary.load(path: path)
            try d.check(model: CSRDictionary.ModelInfo(model: model), path: path)
            let type = try KVCacheType(parsing: configuration.kvSpec, dictionary: d)
            dictionary = (d.contentHash, [UInt8](try d.ggufData()))
            cacheKind = type.makeCache(geometry: KVCacheGeometry(layers: 0..<1, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: 1),
                                       rope: model.rope).kind
        } else {
            let type = try KVCacheType(parsing: configuration.kvSpec)
            dictionary = nil
            cacheKind = type.makeCache(geometry: KVCacheGeometry(layers: 0..<1, kvHeads: c.kvHeadCount, headDim: c.headDim, capacity: 1),
                                       rope: model.rope).kind
        }
        context = try ZMQContext()
        // The ZAP handler first: a CURVE server bound without one would let every key in.
        let zap = try configuration.security.startAuthentication(context: context, logger: logger)
        self.zap = zap
        do {
            router = try CountedSocket(context: context, kind: .router, counters: counters, options: configuration.security.server())
            boundEndpoint = configuration.security.advertised(try router.bind(bindableEndpoint(configuration.listen)))
        } catch {
            zap?.stop()
            throw error
        }
    }

    deinit {
        for w in workers { w.link?.close() }
        router.close()
        zap?.stop()
    }

    // MARK: - Serving loop

    /// Serves until `stop` is raised or a shutdown message arrives; then tells every
    /// worker to shut down. `onReady` runs once, when every worker is loaded and acked.
    public func run(stop: StopSignal, onReady: (String) -> Void = { _ in }) throws {
        logger.info("listening on \(boundEndpoint), waiting for \(configuration.workerCount) workers")
        defer {
            // Whoever waits hears why, before the workers go.
            let why = "the coordinator is shutting down"
            broken = why
            for id in active.keys.sorted() { fail(id, code: .shuttingDown, message: why) }
            for r in waiting { sendToClient(r.client, WireMessage(.error(ErrorBody(code: .shuttingDown, message: why)), requestID: r.requestID)) }
            waiting = []
            shutDownWorkers(reason: "coordinator stopping")
        }
        // Wake up often enough to ping on time.
        let wait = min(.milliseconds(100), configuration.heartbeat.interval / 2)
        while !stop.isRaised {
            if let received = try router.receive(timeout: wait) {
                noteHeard(received)
                let wasServing = phase == .serving
                if try handle(received) == .stop { return }
                if !wasServing, phase == .serving {
                    logger.info("cluster ready: \(workers.map { "\($0.id) \($0.layers!.lowerBound)..<\($0.layers!.upperBound)" }.joined(separator: ", "))")
                    onReady(boundEndpoint)
                    startWaiting()
                }
            }
            heartbeatTick()
            expireSessions()
            checkDrainDeadline()
            checkRecoveryDeadline()
        }
        logger.info("stop requested")
    }

    private enum Next { case keepServing, stop }

    private func handle(_ received: ReceivedMessage) throws -> Next {
        let m: WireMessage
        switch received.result {
        case .success(let message): m = message
        case .failure(let e):
            logger.warning("refused a message from \(received.peer): \(e.localizedDescription)")
            // Not waited for: a peer that sends garbage and reads nothing must not stall the loop.
            answer(received, .error(ErrorBody(code: .malformedMessage, message: clip(e.localizedDescription))),
                   requestID: received.header?.requestID ?? 0, timeout: .zero)
            return .keepServing
        }
        switch m.body {
        case .register(let b):
            register(b, from: received, requestID: m.requestID)
            if phase == .registering, workers.count == configuration.workerCount { try assignShards() }
        case .shardReady(let b):
            guard let i = workerIndex(received) else { return refuseUnknown(received, m) }
            if drainAwaitsReady(from: workers[i].id) {
                drainWorkerReady(workers[i].id, layers: b.layers)
                return .keepServing
            }
            if recovery != nil {
                recoveryWorkerReady(i, layers: b.layers)
                return .keepServing
            }
            guard workers[i].layers == b.layers else {
                throw NodeError.refused(by: workers[i].id, code: .layerMismatch, message: "reported layers \(b.layers), assigned \(String(describing: workers[i].layers))")
            }
            workers[i].ready = true
            logger.info("\(workers[i].id) loaded layers \(b.layers.lowerBound)..<\(b.layers.upperBound), \(b.weightBytes) bytes of weights")
            checkReady()
        case .dictionaryAck(let hash):
            guard let i = workerIndex(received) else { return refuseUnknown(received, m) }
            if let d = dictionary, hash == d.hash {
                workers[i].dictionaryAcked = true
                logger.info("\(workers[i].id) acked dictionary \(hash.prefix(16))…")
                checkReady()
            } else {
                // Refused: this worker never counts as ready, so no inference starts.
                logger.error("\(workers[i].id) acked dictionary \(hash), expected \(dictionary?.hash ?? "none"); refused")
                sendToWorker(i, WireMessage(.error(ErrorBody(code: .dictionaryMismatch, message:
                    "you acknowledged dictionary \(hash); the cluster's is \(dictionary?.hash ?? "none (no csr cache)")")), requestID: m.requestID))
            }
        case .activations(let a):
            guard var r = active[m.sessionID] else {
                answer(received, .error(ErrorBody(code: .unknownSession, message: "no session \(m.sessionID)")), requestID: m.requestID, sessionID: m.sessionID)
                return .keepServing
            }
            guard m.requestID == r.wireID, !r.recovering else {
                logger.debug("session \(m.sessionID): dropped states of the pipeline before the failover")
                return .keepServing
            }
            r.receivedBytes += UInt64(received.wireBytes)
            r.inFlight = false
            r.kvBytes = a.kvBytes
            r.kvBytesByWorker = a.kvBytesByWorker
            r.lastStep = .now
            do {
                let before = r.session.generated.count
                let action = try r.session.receive(a, model: model)
                active[m.sessionID] = r
                if r.recoveryStarted != nil { sessionRecovered(m.sessionID) }
                try perform(tapped(action, r, generatedBefore: before), sessionID: m.sessionID)
            } catch {
                fail(m.sessionID, code: .internalError, message: error.localizedDescription)
            }
        case .kvTransferAck(let ack):
            transferAcknowledged(ack, message: m, from: received)
        case .drainRequest(let d):
            startDrain(d, from: received, requestID: m.requestID)
        case .error(let e) where pendingTransfers[m.requestID] != nil:
            transferFailed(requestID: m.requestID, message: "\(received.peer): \(e.code) \(e.message)")
        case .error(let e) where m.sessionID != 0 && (active[m.sessionID].map { m.requestID != $0.wireID || $0.recovering } ?? false):
            logger.debug("session \(m.sessionID): ignored an error of the pipeline before the failover: \(e.code) \(e.message)")
        case .error(let e):
            if m.sessionID != 0, active[m.sessionID] != nil {
                fail(m.sessionID, code: e.code, message: "\(received.peer): \(e.message)")
            } else if phase != .serving, workerIndex(received) != nil {
                throw NodeError.refused(by: received.peer, code: e.code, message: e.message)
            } else {
                logger.warning("error from \(received.peer): \(e.code) \(e.message)")
            }
        case .generateRequest(let g):
            accept(g, from: received, requestID: m.requestID)
        case .generateCancel:
            cancel(from: received, requestID: m.requestID)
        case .statsRequest:
            answer(received, .statsReply(statsReply()), requestID: m.requestID)
        case .ping(let nonce):
            answer(received, .pong(nonce: nonce), requestID: m.requestID)
        case .pong, .statsReply:
            break
        case .shutdown(let reason):
            logger.info("shutdown requested by \(received.peer): \(reason)")
            return .stop
        default:
            answer(received, .error(ErrorBody(code: .unexpectedMessage, message: "the coordinator does not take \(m.kind)")),
                   requestID: m.requestID)
        }
        return .keepServing
    }

    // MARK: - Registration and shard plan

    private func register(_ b: RegisterBody, from received: ReceivedMessage, requestID: UInt64) {
        func refuse(_ code: WireErrorCode, _ why: String) {
            logger.warning("refused worker \(b.workerID): \(why)")
            answer(received, .error(ErrorBody(code: code, message: clip(why))), requestID: requestID)
        }
        guard phase == .registering || phase == .serving else {
            return refuse(.unexpectedMessage, "the cluster is starting with its \(configuration.workerCount) workers; register again once it is ready")
        }
        guard workers.count < WireProtocol.maxWorkers else { return refuse(.unexpectedMessage, "the cluster has \(workers.count) workers, the most it numbers") }
        guard b.modelFingerprint == model.fingerprint else {
            return refuse(.modelMismatch, "model fingerprint \(b.modelFingerprint) differs from the coordinator's \(model.fingerprint); run every process on the same GGUF file")
        }
        guard b.workerID != coordinatorPeerID, !b.workerID.hasSuffix(WireProtocol.heartbeatSuffix), received.peer == b.workerID else {
            return refuse(.malformedMessage, "worker id '\(b.workerID)' must be the socket's routing id, not '\(coordinatorPeerID)' and not end in '\(WireProtocol.heartbeatSuffix)'")
        }
        guard !workers.contains(where: { $0.id == b.workerID }) else {
            return refuse(.unexpectedMessage, "a worker named \(b.workerID) is already registered; give each worker its own --id")
        }
        guard let routingID = received.routingID else { return }
        workers.append(WorkerState(id: b.workerID, routingID: routingID, endpoint: b.peerEndpoint, budget: b.memoryBudgetBytes))
        monitor.add(b.workerID, now: .now)
        answer(received, .registerAck(workerIndex: workers.count - 1), requestID: requestID)
        guard phase == .serving else {
            logger.info("registered \(b.workerID) at \(b.peerEndpoint), budget \(b.memoryBudgetBytes) bytes (\(workers.count)/\(configuration.workerCount))")
            return
        }
        // A worker that registers once the cluster serves is a standby: it gets the
        // dictionary (and must ack its hash) but no layers.
        let i = workers.count - 1
        workers[i].pipeline = Self.standby
        do {
            var options = ZMQSocketOptions()
            options.routingID = Array(coordinatorPeerID.utf8)
            let link = try CountedSocket(context: context, kind: .dealer, counters: counters, peerLabel: b.workerID,
                                         options: configuration.security.client(options))
            try link.connect(b.peerEndpoint.description)
            workers[i].link = link
        } catch {
            logger.error("cannot connect to standby \(b.workerID) at \(b.peerEndpoint): \(error.localizedDescription)")
            monitor.remove(b.workerID)
            workers.remove(at: i)
            return
        }
        logger.info("registered \(b.workerID) at \(b.peerEndpoint) as a standby (no layers)")
        if let d = dictionary { sendToWorker(i, WireMessage(.dictionary(DictionaryBody(contentHash: d.hash, gguf: d.gguf)))) }
    }

    /// The pipeline number of a worker that registered after the start: it holds no layers.
    static let standby = -1

    private func assignShards() throws {
        // With a handoff, both pipelines get one split, planned on the smaller budget of
        // each (prefill, decode) pair, so KV moves one to one between counterparts.
        let k = configuration.prefillWorkers
        let pairs = k > 0 ? (0..<k).map { [$0, $0 + k] } : workers.indices.map { [$0] }
        let plan: [Range<Int>]
        do {
            plan = try ShardPlanner.plan(layerCount: model.config.layerCount,
                                         budgets: pairs.map { $0.map { workers[$0].budget }.min()! },
                                         bytesPerLayer: bytesPerLayer, fixedBytes: UInt64(dictionary?.gguf.count ?? 0),
                                         names: pairs.map { $0.map { workers[$0].id }.joined(separator: "/") })
        } catch {
            for i in workers.indices {
                _ = try? router.send(WireMessage(.error(ErrorBody(code: .outOfMemory, message: clip(error.localizedDescription)))),
                                 to: workers[i].routingID, timeout: .seconds(1))
            }
            throw error
        }
        phase = .starting
        for (p, pair) in pairs.enumerated() {
            for (pipeline, i) in pair.enumerated() {
                workers[i].layers = plan[p]
                workers[i].segments = [plan[p]]
                workers[i].pipeline = pipeline
            }
        }
        for i in workers.indices {
            var options = ZMQSocketOptions()
            options.routingID = Array(coordinatorPeerID.utf8)
            let link = try CountedSocket(context: context, kind: .dealer, counters: counters, peerLabel: workers[i].id,
                                         options: configuration.security.client(options))
            try link.connect(workers[i].endpoint.description)
            workers[i].link = link
        }
        for i in workers.indices {
            sendToWorker(i, WireMessage(.shardAssignment(assignment(for: i))))
            if let d = dictionary {
                sendToWorker(i, WireMessage(.dictionary(DictionaryBody(contentHash: d.hash, gguf: d.gguf))))
            }
            let role = k > 0 ? (workers[i].pipeline == 0 ? " (prefill)" : " (decode)") : ""
            logger.info("assigned layers \(workers[i].layers!.lowerBound)..<\(workers[i].layers!.upperBound) to \(workers[i].id)\(role)")
        }
    }

    /// Worker i's layers and next hop (the next worker of its pipeline, or the coordinator).
    func assignment(for i: Int, layers: Range<Int>? = nil, without gone: Int? = nil) -> ShardAssignmentBody {
        let line = pipeline(workers[i].pipeline).filter { $0 != gone }
        let position = line.firstIndex(of: i)!
        let hop: ShardAssignmentBody.NextHop = position + 1 < line.count ? .peer(workers[line[position + 1]].endpoint) : .coordinator
        return ShardAssignmentBody(layers: layers ?? workers[i].layers!, modelLayers: model.config.layerCount, kvSpec: configuration.kvSpec,
                                   dictionaryHash: dictionary?.hash ?? "", contextCapacity: contextLength, nextHop: hop)
    }

    /// Worker indices of pipeline `p`, in layer order.
    func pipeline(_ p: Int) -> [Int] { workers.indices.filter { workers[$0].pipeline == p } }

    func checkReady() {
        guard phase == .starting, recovery == nil else { return }
        let serving = workers.filter { $0.pipeline != Self.standby }
        if !serving.isEmpty, serving.allSatisfy({ $0.ready && (dictionary == nil || $0.dictionaryAcked) }) { phase = .serving }
    }

    func index(ofWorker id: String) -> Int? { workers.firstIndex { $0.id == id } }

    private func workerIndex(_ received: ReceivedMessage) -> Int? {
        workers.firstIndex { $0.id == received.peer && $0.routingID == received.routingID }
    }

    private func refuseUnknown(_ received: ReceivedMessage, _ m: WireMessage) -> Next {
        answer(received, .error(ErrorBody(code: .unexpectedMessage, message: "\(m.kind) from \(received.peer), which is not a registered worker")),
               requestID: m.requestID)
        return .keepServing
    }

    // MARK: - Generation

    private func accept(_ g: GenerateRequestBody, from received: ReceivedMessage, requestID: UInt64) {
        if let broken {
            answer(received, .error(ErrorBody(code: .unreachable, message: clip(broken))), requestID: requestID)
            return
        }
        guard phase == .serving, let client = received.routingID else {
            let missing = workers.filter { !$0.ready || (dictionary != nil && !$0.dictionaryAcked) }.map(\.id)
            answer(received, .error(ErrorBody(code: .unexpectedMessage, message: clip(
                "the cluster is not ready: \(workers.count)/\(configuration.workerCount) workers registered" + (missing.isEmpty ? "" : ", waiting for \(missing.joined(separator: ", "))")))),
                   requestID: requestID)
            return
        }
        var text = g.prompt
        if g.chat { text = tokenizer.applyChatTemplate(messages: [(role: "user", content: text)], addGenerationPrompt: true) }
        // Special tokens in the prompt are parsed, as llama.cpp does (the HTTP API sends
        // chat-templated text).
        let ids = tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        guard !ids.isEmpty, ids.count < contextLength else {
            answer(received, .error(ErrorBody(code: .capacityExceeded, message: "the prompt has \(ids.count) tokens; 1...\(contextLength - 1) fit the context")),
                   requestID: requestID)
            return
        }
        let ignoreEOS = g.ignoreEOS, tokenizer = tokenizer
        let session = GenerationSession(
            id: nextSessionID, prompt: ids, maxTokens: g.maxTokens,
            sampling: SamplingOptions(temperature: g.temperature, topK: g.topK, topP: g.topP, seed: g.seed),
            contextLength: contextLength, isStop: { !ignoreEOS && tokenizer.isEndOfGeneration($0) })
        nextSessionID += 1
        var request = Request(client: client, requestID: requestID, session: session, deadline: .now + configuration.stepTimeout)
        request.streamTokens = g.stream
        waiting.append(request)
        startWaiting()
    }

    func startWaiting() {
        while phase == .serving, drain == nil, recovery == nil, broken == nil, active.count < configuration.maxConcurrentSessions, !waiting.isEmpty {
            var r = waiting.removeFirst()
            let id = r.session.id
            r.wireID = takeControlID()
            do {
                let action = try r.session.start(model: model)
                active[id] = r
                logger.info("session \(id): \(r.session.prompt.count) prompt tokens, up to \(r.session.maxTokens) new")
                try perform(action, sessionID: id)
            } catch {
                active[id] = r
                fail(id, code: .internalError, message: error.localizedDescription)
            }
        }
    }

    func perform(_ action: GenerationSession.Action, sessionID: UInt64) throws {
        guard var r = active[sessionID] else { return }
        switch action {
        case .send(let states):
            let handoff = shouldHandOff(r, states)
            if handoff || drainHolds(r) {
                r.parked = states
                if r.session.prefillEnd != nil { r.pausedSince = r.pausedSince ?? .now }
                r.deadline = .now + configuration.stepTimeout
                active[sessionID] = r
                if handoff { startHandoff(sessionID) } else { advanceDrain() }
                return
            }
            try send(states, sessionID: sessionID)
        case .finish(let reason):
            let s = r.session
            let now = ContinuousClock.now
            let prefillEnd = s.prefillEnd ?? now
            let reply = GenerateReplyBody(
                promptTokens: s.prompt, generatedTokens: s.generated, text: clipText(tokenizer.decode(s.generated)),
                prefillNanoseconds: nanoseconds(prefillEnd - s.started),
                decodeNanoseconds: nanoseconds(now - prefillEnd) - min(r.pausedNanoseconds, nanoseconds(now - prefillEnd)),
                stopReason: reason, kvCache: cacheKind, kvCacheBytes: r.kvBytes,
                activationBytesSent: r.sentBytes, activationBytesReceived: r.receivedBytes,
                kvTransferBytes: r.transferBytes, kvTransferNanoseconds: r.transferNanoseconds,
                kvBaselineBytes: r.baselineBytes, kvBaselineNanoseconds: r.baselineNanoseconds, kvBytesByWorker: r.kvBytesByWorker)
            sendToClient(r.client, WireMessage(.generateReply(reply), requestID: r.requestID))
            logger.info("session \(sessionID): \(s.generated.count) tokens, stop \(reason)")
            end(sessionID)
        }
    }

    /// Sends a session's states to the first worker of its pipeline.
    func send(_ states: ActivationsBody, sessionID: UInt64) throws {
        guard var r = active[sessionID] else { return }
        guard let first = pipeline(r.pipeline).first, let link = workers[first].link else { throw NodeError.badConfiguration("no workers") }
        if states.phase == .decode, !r.replicated, replicasEnabled {
            r.replicated = true
            active[sessionID] = r
            startReplicas(sessionID)
            r = active[sessionID] ?? r
        } else if configuration.replicate, states.phase == .decode, !r.streaming, !replicasEnabled {
            startStreaming(sessionID, pipeline: r.pipeline)
            r.streaming = true
        }
        r.sentBytes += UInt64(try link.send(WireMessage(.activations(states), requestID: r.wireID, sessionID: sessionID),
                                            timeout: .seconds(30)))
        r.inFlight = true
        r.parked = nil
        if let since = r.pausedSince {
            r.pausedNanoseconds += nanoseconds(.now - since)
            r.pausedSince = nil
        }
        r.deadline = .now + configuration.stepTimeout
        active[sessionID] = r
    }

    func fail(_ sessionID: UInt64, code: WireErrorCode, message: String) {
        guard let r = active[sessionID] else { return }
        logger.error("session \(sessionID) failed: \(message)")
        sendToClient(r.client, WireMessage(.error(ErrorBody(code: code, message: clip(message))), requestID: r.requestID))
        end(sessionID)
    }

    private func end(_ sessionID: UInt64) {
        active[sessionID] = nil
        for (id, t) in pendingTransfers where t.sessionID == sessionID && t.purpose != .drain { pendingTransfers[id] = nil }
        for i in workers.indices { sendToWorker(i, WireMessage(.dropSession, sessionID: sessionID)) }
        advanceDrain()
        startWaiting()
    }

    /// Refuses every request still waiting for its turn.
    func failWaiting(_ why: String) {
        for r in waiting { sendToClient(r.client, WireMessage(.error(ErrorBody(code: .unreachable, message: clip(why))), requestID: r.requestID)) }
        waiting = []
    }

    private func expireSessions() {
        let now = ContinuousClock.now
        for (id, r) in active where r.deadline < now && r.parked == nil && !r.recovering {
            fail(id, code: .unreachable, message: "no hidden states came back within \(configuration.stepTimeout); is every worker alive?")
        }
    }
}
