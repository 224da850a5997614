import Foundation
import Logging
import SparseKVEngine

/// The coordinator process: registers workers, plans contiguous shards by memory budget,
/// broadcasts the dictionary (and waits for every worker's ack of its hash), then serves
/// generate requests by driving hidden states through the worker pipeline. It holds the
/// tokenizer, embeddings, final norm, LM head and sampling.
///
/// The decisions about workers (registration, the shard plan, liveness, drains, failover)
/// and about the sessions (admission, step deadlines, KV transfers and their acks, kept
/// replicas, replica installs, the prefill -> decode handoff) are taken by ``CoordinatorCore``, free of I/O; this
/// class translates received messages into its events and carries out the actions it
/// returns (Coordinator+Actions.swift), and runs the sessions (GenerationSession, with
/// the model). Parking and resuming sessions for a drain or a handoff are in
/// Coordinator+Transfers.swift, pausing and rebuilding them in a failover in
/// Coordinator+Failover.swift, sending in Coordinator+Sending.swift.
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
    let context: ZMQContext
    /// Checks the keys of connecting workers and clients (CURVE only).
    private let zap: ZAPHandler?
    let router: CountedSocket

    // MARK: - State

    struct Request {
        let client: [UInt8]
        let requestID: UInt64
        var session: GenerationSession
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
        /// Decode time spent parked while KV moved (a handoff, a drain): not decoding.
        var pausedNanoseconds: UInt64 = 0
        var pausedSince: ContinuousClock.Instant?
        /// Whether the workers stream this session's decoded tokens (`replicate`).
        var streaming = false
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
        /// After a failover that kept the KV: the token the session resumed from (its
        /// replicas were installed); nil when it was recomputed.
        var resumedAt: Int?
        /// Token streaming and cancel (Coordinator+TokenTap.swift); KV bytes per worker.
        var streamTokens = false
        var cancelRequested = false
        var kvBytesByWorker: [WorkerKVBytes] = []
    }

    /// The workers, the plan, liveness, drain and failover: every decision about them.
    var core: CoordinatorCore
    /// The link (a DEALER) to each worker, by id.
    var links: [String: CountedSocket] = [:]
    /// Set when the core declares the cluster ready; the loop then runs `onReady`.
    var becameReady = false
    var active: [UInt64: Request] = [:]
    var waiting: [Request] = []
    private var nextSessionID: UInt64 = 1

    /// Loads the coordinator's part of the model and the dictionary, and binds.
    public init(configuration: CoordinatorConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        guard configuration.heartbeat.interval > .zero, configuration.heartbeat.liveness >= 1 else {
            throw NodeError.badConfiguration("the heartbeat interval must be positive and the liveness at least 1")
        }
        guard configuration.workerCount >= 1 else { throw NodeError.badConfiguration("--workers must be at least 1") }
        guard (configuration.replicas ?? 1) >= 0, (configuration.replicas ?? 1) <= 1 else {
            throw NodeError.badConfiguration("--replicas must be 0 or 1, not \(configuration.replicas ?? 1)")
        }
        guard ["", KVCacheFormat.baselineEncoding].contains(configuration.handoffBaseline) else {
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
        if try KVCacheFormats.format(spec: configuration.kvSpec).needsDictionary {
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
        var settings = CoordinatorCore.Settings(workerCount: configuration.workerCount, layerCount: c.layerCount, bytesPerLayer: bytesPerLayer,
                                                modelFingerprint: model.fingerprint, kvSpec: configuration.kvSpec, cacheKind: cacheKind,
                                                contextLength: contextLength)
        settings.prefillWorkers = configuration.prefillWorkers
        settings.dictionaryBytes = UInt64(dictionary?.gguf.count ?? 0)
        settings.dictionaryHash = dictionary?.hash
        settings.heartbeat = configuration.heartbeat
        settings.stepTimeout = configuration.stepTimeout
        settings.maxSessions = configuration.maxConcurrentSessions
        settings.replicas = (configuration.replicas ?? 1) > 0 && KVCacheFormats.supportsReplica(kind: cacheKind)
        settings.handoffBaseline = configuration.handoffBaseline
        core = CoordinatorCore(settings: settings)
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
        for link in links.values { link.close() }
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
            core.stop(why)
            for id in active.keys.sorted() { fail(id, code: .shuttingDown, message: why) }
            for r in waiting { sendToClient(r.client, WireMessage(.error(ErrorBody(code: .shuttingDown, message: why)), requestID: r.requestID)) }
            waiting = []
            shutDownWorkers(reason: "coordinator stopping")
        }
        // Wake up often enough to ping on time.
        let wait = min(.milliseconds(100), configuration.heartbeat.interval / 2)
        while !stop.isRaised {
            if let received = try router.receive(timeout: wait) {
                core.heard(received.peer, now: .now)
                if try handle(received) == .stop { return }
                announceReady(onReady)
            }
            try carryOut(core.tick(now: .now))
            announceReady(onReady)
        }
        logger.info("stop requested")
    }

    private enum Next { case keepServing, stop }

    /// Once the core declared the cluster ready: log the plan, run `onReady`, start the waiting requests.
    private func announceReady(_ onReady: (String) -> Void) {
        guard becameReady else { return }
        becameReady = false
        logger.info("cluster ready: \(core.planDescription)")
        onReady(boundEndpoint)
        startWaiting()
    }

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
            try carryOut(core.register(b, peer: received.peer, routingID: received.routingID, now: .now), answering: received, requestID: m.requestID)
        case .shardReady(let b):
            guard workerIndex(received) != nil else { return refuseUnknown(received, m) }
            try carryOut(core.shardReady(received.peer, layers: b.layers, weightBytes: b.weightBytes, now: .now))
        case .dictionaryAck(let hash):
            guard workerIndex(received) != nil else { return refuseUnknown(received, m) }
            try carryOut(core.dictionaryAck(received.peer, hash: hash, requestID: m.requestID))
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
            carry(core.transferAcked(requestID: m.requestID, sessionID: m.sessionID, from: received.peer, ack, now: .now))
        case .drainRequest(let d):
            try carryOut(core.requestDrain(d, client: received.routingID, requestID: m.requestID), answering: received, requestID: m.requestID)
            advanceDrain()
        case .error(let e) where core.awaitsTransfer(m.requestID):
            carry(core.transferFailed(requestID: m.requestID, message: "\(received.peer): \(e.code) \(e.message)", now: .now))
        case .error(let e) where m.sessionID != 0 && (active[m.sessionID].map { m.requestID != $0.wireID || $0.recovering } ?? false):
            logger.debug("session \(m.sessionID): ignored an error of the pipeline before the failover: \(e.code) \(e.message)")
        case .error(let e):
            if m.sessionID != 0, active[m.sessionID] != nil {
                fail(m.sessionID, code: e.code, message: "\(received.peer): \(e.message)")
            } else if core.phase != .serving, workerIndex(received) != nil {
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

    // MARK: - Workers

    /// The registered workers, as the core plans them.
    var workers: [CoordinatorCore.Worker] { core.workers }

    /// Worker indices of pipeline `p`, in layer order.
    func pipeline(_ p: Int) -> [Int] { core.pipeline(p) }

    func index(ofWorker id: String) -> Int? { core.index(ofWorker: id) }

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
        if let refused = core.refusal(promptTokens: nil) {
            answer(received, .error(refused), requestID: requestID)
            return
        }
        guard let client = received.routingID else { return }
        var text = g.prompt
        if g.chat { text = tokenizer.applyChatTemplate(messages: [(role: "user", content: text)], addGenerationPrompt: true) }
        // Special tokens in the prompt are parsed, as llama.cpp does (the HTTP API sends
        // chat-templated text).
        let ids = tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        if let refused = core.refusal(promptTokens: ids.count) {
            answer(received, .error(refused), requestID: requestID)
            return
        }
        let ignoreEOS = g.ignoreEOS, tokenizer = tokenizer
        let session = GenerationSession(
            id: nextSessionID, prompt: ids, maxTokens: g.maxTokens,
            sampling: SamplingOptions(temperature: g.temperature, topK: g.topK, topP: g.topP, seed: g.seed),
            contextLength: contextLength, isStop: { !ignoreEOS && tokenizer.isEndOfGeneration($0) })
        nextSessionID += 1
        var request = Request(client: client, requestID: requestID, session: session)
        request.streamTokens = g.stream
        waiting.append(request)
        startWaiting()
    }

    func startWaiting() {
        while core.startsSessions, !waiting.isEmpty {
            var r = waiting.removeFirst()
            let id = r.session.id
            r.wireID = takeControlID()
            core.sessionStarted(id, promptTokens: r.session.prompt.count)
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
            if handoff || core.drainHolds(generated: r.session.generated.count) {
                r.parked = states
                if r.session.prefillEnd != nil { r.pausedSince = r.pausedSince ?? .now }
                active[sessionID] = r
                core.sessionParked(sessionID)
                if handoff { carry(core.startHandoff(sessionID, now: .now)) } else { advanceDrain() }
                return
            }
            try send(states, sessionID: sessionID)
        case .finish(let reason):
            let s = r.session
            let now = ContinuousClock.now
            let prefillEnd = s.prefillEnd ?? now
            let moved = core.sessions[sessionID]
            let reply = GenerateReplyBody(
                promptTokens: s.prompt, generatedTokens: s.generated, text: clipText(tokenizer.decode(s.generated)),
                prefillNanoseconds: nanoseconds(prefillEnd - s.started),
                decodeNanoseconds: nanoseconds(now - prefillEnd) - min(r.pausedNanoseconds, nanoseconds(now - prefillEnd)),
                stopReason: reason, kvCache: cacheKind, kvCacheBytes: r.kvBytes,
                activationBytesSent: r.sentBytes, activationBytesReceived: r.receivedBytes,
                kvTransferBytes: moved?.transferBytes ?? 0, kvTransferNanoseconds: moved?.transferNanoseconds ?? 0,
                kvBaselineBytes: moved?.baselineBytes ?? 0, kvBaselineNanoseconds: moved?.baselineNanoseconds ?? 0,
                kvBytesByWorker: r.kvBytesByWorker)
            sendToClient(r.client, WireMessage(.generateReply(reply), requestID: r.requestID))
            logger.info("session \(sessionID): \(s.generated.count) tokens, stop \(reason)")
            end(sessionID)
        }
    }

    /// Sends a session's states to the first worker of its pipeline.
    func send(_ states: ActivationsBody, sessionID: UInt64) throws {
        guard var r = active[sessionID] else { return }
        guard let first = pipeline(r.pipeline).first, let link = links[workers[first].id] else { throw NodeError.badConfiguration("no workers") }
        carry(core.sessionSends(sessionID, pipeline: r.pipeline, phase: states.phase, now: .now))
        if configuration.replicate, states.phase == .decode, !r.streaming, !core.keepsReplicas(pipeline: r.pipeline) {
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
        active[sessionID] = r
        core.stepSent(sessionID, now: .now)
    }

    func fail(_ sessionID: UInt64, code: WireErrorCode, message: String) {
        guard let r = active[sessionID] else { return }
        logger.error("session \(sessionID) failed: \(message)")
        sendToClient(r.client, WireMessage(.error(ErrorBody(code: code, message: clip(message))), requestID: r.requestID))
        end(sessionID)
    }

    private func end(_ sessionID: UInt64) {
        active[sessionID] = nil
        core.sessionEnded(sessionID)
        for i in workers.indices { sendToWorker(i, WireMessage(.dropSession, sessionID: sessionID)) }
        advanceDrain()
        startWaiting()
    }

    /// Refuses every request still waiting for its turn.
    func failWaiting(_ why: String) {
        for r in waiting { sendToClient(r.client, WireMessage(.error(ErrorBody(code: .unreachable, message: clip(why))), requestID: r.requestID)) }
        waiting = []
    }
}
