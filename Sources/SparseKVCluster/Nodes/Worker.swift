import Foundation
import Logging
import SparseKVEngine

/// A worker process: registers with the coordinator, loads the layers it is assigned,
/// checks the broadcast dictionary, keeps each session's KV cache for its layers, and
/// passes hidden states on to the next hop (the next worker, or the coordinator).
///
/// Sockets: one ROUTER bound at `listen` takes everything addressed to the worker (the
/// coordinator's link, the previous worker's link); a DEALER to the coordinator (routing
/// id = worker id) registers and carries everything the worker sends the coordinator;
/// a DEALER to the next worker carries activations. Nothing a peer sends ends the loop
/// except a shutdown message.
public final class Worker {
    public let configuration: WorkerConfiguration
    public let counters = ByteCounters()
    let logger: Logger
    let gguf: GGUFFile
    /// No layers: config, fingerprint and rope for checks.
    let base: LlamaModel
    private let context: ZMQContext
    /// Checks the keys of the coordinator and of peers sending states or KV (CURVE only).
    private let zap: ZAPHandler?
    private let router: CountedSocket
    let up: CountedSocket
    /// The next worker's endpoint; nil sends the output to the coordinator.
    private var next: String?
    /// The endpoint the ROUTER is bound to (with the chosen port).
    public let boundEndpoint: String

    // MARK: - State

    /// Contiguous pieces of this worker's layers, each with its own model instance and one
    /// cache per session. A first assignment gives one segment; a drain that moves a
    /// neighbour's layers here adds segments, so the caches already held stay as they are.
    struct Segment {
        let layers: Range<Int>
        let model: LlamaModel
    }

    var assignment: ShardAssignmentBody?
    var segments: [Segment] = []
    var dictionary: CSRDictionary?
    var cacheType: KVCacheType?
    /// KV caches of this worker's layers: by session id, then by the segment's first layer.
    var sessions: [UInt64: [Int: any KVCache]] = [:]
    /// Where each session's decoded tokens' KV goes, by the first layer of the segment it
    /// belongs to (Worker+Replica.swift).
    var streams: [UInt64: [Int: String]] = [:]
    /// Caches kept for another worker's layers (replicas, Worker+Replica.swift): by session
    /// id, then by first layer.
    var replicas: [UInt64: [Int: any KVCache]] = [:]
    /// The newest request id of each session's states: newer states may cut the caches back.
    var latestRequest: [UInt64: UInt64] = [:]
    /// The endpoint peers know this worker by (a KV request to it is served locally).
    var ownEndpoint: String?
    /// DEALER links to other workers (the next hop, KV transfer destinations), one per
    /// endpoint and kept for the process's life: a ROUTER drops a second connection that
    /// carries a routing id it already has, so a link is never duplicated or replaced.
    private var peers: [String: CountedSocket] = [:]
    /// Raised by the heartbeat thread when the coordinator stopped pinging.
    private let coordinatorGone = StopSignal()
    private var heartbeat: HeartbeatResponder?

    public init(configuration: WorkerConfiguration, logger: Logger) throws {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "worker"] = "\(configuration.id)"
        self.logger = logger
        guard configuration.id != coordinatorPeerID, !configuration.id.hasSuffix(WireProtocol.heartbeatSuffix) else {
            throw NodeError.badConfiguration("the worker id '\(configuration.id)' is reserved ('\(coordinatorPeerID)', or ending in '\(WireProtocol.heartbeatSuffix)'); pick another --id")
        }
        gguf = try GGUFFile(path: configuration.modelPath)
        base = try LlamaModel(gguf: gguf, layers: 0..<0, embeddings: false, head: false)
        context = try ZMQContext()
        let security = configuration.security
        // The ZAP handler first: a CURVE server bound without one would let every key in.
        let zap = try security.startAuthentication(context: context, logger: logger)
        self.zap = zap
        do {
            router = try CountedSocket(context: context, kind: .router, counters: counters, options: security.server())
            boundEndpoint = security.advertised(try router.bind(bindableEndpoint(configuration.listen)))
            var options = ZMQSocketOptions()
            options.routingID = Array(configuration.id.utf8)
            up = try CountedSocket(context: context, kind: .dealer, counters: counters, peerLabel: coordinatorPeerID,
                                   options: security.client(options))
            try up.watchHandshakes()
            try up.connect(configuration.coordinator)
        } catch {
            zap?.stop()
            throw error
        }
    }

    deinit {
        heartbeat?.stop()
        // A dead peer must not hold the exit: what it did not take within a moment is dropped.
        for p in peers.values { p.close(linger: .milliseconds(300)) }
        up.close(linger: .milliseconds(300))
        router.close(linger: .milliseconds(300))
        zap?.stop()
    }

    // MARK: - Registration

    /// Registers and serves until a shutdown message or `stop` is raised.
    public func run(stop: StopSignal) throws {
        // Under CURVE the advertised endpoint carries this worker's public key.
        let advertised = configuration.advertise.map { $0.contains("#") ? $0 : configuration.security.advertised($0) }
        let endpoint = try Endpoint(parsing: advertised ?? boundEndpoint)
        guard !endpoint.isWildcard, endpoint.host != "0.0.0.0", endpoint.host != "[::]" else {
            throw NodeError.badConfiguration("the worker listens on \(boundEndpoint), which peers cannot connect to; give --advertise tcp://HOST:PORT")
        }
        ownEndpoint = endpoint.description
        let register = WireMessage(.register(RegisterBody(
            workerID: configuration.id, peerEndpoint: endpoint, memoryBudgetBytes: configuration.memoryBudgetBytes,
            modelFingerprint: base.fingerprint)), requestID: 1)
        // The send waits while no link is up; a refused key can take the link down before
        // it is tried, so a refused handshake is checked for while it waits.
        let sendDeadline = ContinuousClock.now + .seconds(10)
        while true {
            do {
                try up.send(register, timeout: .milliseconds(200))
                break
            } catch ZMQError.timedOut {
                try up.checkHandshakes()
                if ContinuousClock.now >= sendDeadline { throw ZMQError.timedOut(operation: "the registration send to \(configuration.coordinator)") }
            }
        }
        let deadline = ContinuousClock.now + configuration.registrationTimeout
        registration: while true {
            if stop.isRaised { throw NodeError.stopped }
            try up.checkHandshakes()
            guard ContinuousClock.now < deadline else {
                throw NodeError.timedOut(waitingFor: "the registration answer", peer: configuration.coordinator)
            }
            guard let received = try up.receive(timeout: .milliseconds(200)) else { continue }
            switch received.result {
            case .success(let m):
                switch m.body {
                case .registerAck(let index):
                    logger.info("registered as worker \(index), listening on \(boundEndpoint)")
                    try startHeartbeat()
                    break registration
                case .error(let e):
                    throw NodeError.refused(by: coordinatorPeerID, code: e.code, message: e.message)
                default:
                    logger.warning("ignoring \(m.kind) before the registration answer")
                }
            case .failure(let e):
                logger.warning("malformed message from the coordinator: \(e.localizedDescription)")
            }
        }
        defer { heartbeat?.stop() }
        try serve(stop: stop)
        if coordinatorGone.isRaised {
            throw NodeError.peerLost(peer: configuration.coordinator, silence: heartbeat?.lostAfter ?? configuration.heartbeat.deadAfter)
        }
    }

    /// Answers the coordinator's pings on a thread of its own; when they stop, the serving
    /// loop ends.
    private func startHeartbeat() throws {
        let responder = try HeartbeatResponder(context: context, coordinator: configuration.coordinator, workerID: configuration.id,
                                               counters: counters, settings: configuration.heartbeat,
                                               security: configuration.security, logger: logger)
        heartbeat = responder
        let gone = coordinatorGone, logger = logger
        responder.start { quiet in
            logger.error("no ping from the coordinator for \(quiet); it is gone or has declared this worker dead. Exiting.")
            gone.raise()
        }
    }

    // MARK: - Serving loop

    private func serve(stop: StopSignal) throws {
        while !stop.isRaised, !coordinatorGone.isRaised {
            // The coordinator's ROUTER answers on the registration link (refusals, a
            // shutdown before links exist); everything else comes to our ROUTER.
            while let received = try up.receive(timeout: .zero) {
                guard case .success(let m) = received.result else { continue }
                switch m.body {
                case .shutdown(let reason):
                    logger.info("shutdown: \(reason)")
                    return
                case .error(let e) where assignment == nil:
                    throw NodeError.refused(by: coordinatorPeerID, code: e.code, message: e.message)
                default:
                    logger.warning("\(m.kind) from the coordinator on the registration link, ignored")
                }
            }
            guard var received = try router.receive(timeout: .milliseconds(200)) else { continue }
            // The message is taken out of `received`, so `handle` holds its only copy.
            var message: WireMessage
            switch received.takeResult() {
            case .success(let m): message = m
            case .failure(let e):
                logger.warning("refused a message from \(received.peer): \(e.localizedDescription)")
                reply(to: received, WireMessage(.error(ErrorBody(code: .malformedMessage, message: clip(e.localizedDescription))),
                                                requestID: received.header?.requestID ?? 0), timeout: .zero)
                continue
            }
            // `handle` may take the body out of `message` (hidden states), so the error path
            // keeps what it needs first.
            let kind = message.kind, requestID = message.requestID, sessionID = message.sessionID
            do {
                if try handle(&message, from: received) == .stop { return }
            } catch {
                logger.error("\(kind) from \(received.peer) failed: \(error.localizedDescription)")
                let code: WireErrorCode = (error as? WorkerFailure)?.code ?? .internalError
                let session = kind.sessionRule == .required ? sessionID : 0
                let answer = WireMessage(.error(ErrorBody(code: code, message: clip("\(configuration.id): \(error.localizedDescription)"))),
                                         requestID: requestID, sessionID: session)
                // A failed pipeline step or KV transfer is the coordinator's to know, whoever
                // passed the states or the payload on; the sender of a transfer hears too.
                if kind == .activations || kind == .kvTransfer {
                    do { try up.send(answer, timeout: .seconds(5)) } catch { logger.warning("could not tell the coordinator: \(error)") }
                }
                if kind != .activations, !(kind == .kvTransfer && received.peer == coordinatorPeerID) {
                    reply(to: received, answer)
                }
            }
        }
        logger.info("stop requested")
    }

    private enum Next { case keepServing, stop }

    /// Carries out one message. Hidden states are taken out of `m` (``runLayers(taking:)``).
    private func handle(_ m: inout WireMessage, from received: ReceivedMessage) throws -> Next {
        if case .activations = m.body {
            try runLayers(taking: &m)
            return .keepServing
        }
        switch m.body {
        case .shardAssignment(let a):
            try assign(a)
        case .dictionary(let d):
            try installDictionary(d)
        case .dropSession:
            sessions[m.sessionID] = nil
            replicas[m.sessionID] = nil
            streams[m.sessionID] = nil
            latestRequest[m.sessionID] = nil
        case .kvRequest(let r):
            try sendKV(r, message: m)
        case .kvTransfer(let t):
            try receiveKV(t, message: m, from: received)
        case .kvTransferAck(let a):
            logger.info("\(received.peer) installed session \(m.sessionID) layers \(a.layers.lowerBound)..<\(a.layers.upperBound), \(a.tokenCount) tokens")
        case .statsRequest:
            let bytes = (sessions.values.flatMap(\.values) + replicas.values.flatMap(\.values)).reduce(0) { $0 + $1.byteCount }
            reply(to: received, WireMessage(.statsReply(StatsReplyBody(
                traffic: counters.snapshot(), kvCacheBytes: UInt64(bytes), sessionCount: Set(sessions.keys).union(replicas.keys).count)),
                requestID: m.requestID))
        case .ping(let nonce):
            reply(to: received, WireMessage(.pong(nonce: nonce), requestID: m.requestID))
        case .shutdown(let reason):
            logger.info("shutdown: \(reason)")
            return .stop
        case .error(let e):
            logger.error("error from \(received.peer): \(e.code) \(e.message)")
        default:
            throw WorkerFailure(code: .unexpectedMessage, message: "a worker does not take \(m.kind)")
        }
        return .keepServing
    }

    /// Replies go to the coordinator over the DEALER (its ROUTER is where it listens),
    /// to anyone else over the ROUTER they came in on. A failed reply is logged only.
    func reply(to received: ReceivedMessage, _ message: WireMessage, timeout: Duration = .seconds(5)) {
        do {
            if received.peer == coordinatorPeerID {
                try up.send(message, timeout: timeout)
            } else if let id = received.routingID {
                try router.send(message, to: id, timeout: timeout)
            }
        } catch {
            logger.warning("could not answer \(received.peer): \(error.localizedDescription)")
        }
    }

    // MARK: - Assignment and dictionary

    /// A first assignment loads the layers; a later one that keeps the KV spec and extends
    /// the range on either side (a drain moving a neighbour's layers here) loads only the
    /// added layers, as new segments, and keeps every session's caches. Any other change
    /// reloads and drops the sessions.
    private func assign(_ a: ShardAssignmentBody) throws {
        let c = base.config
        guard a.modelLayers == c.layerCount, a.layers.upperBound <= c.layerCount else {
            throw WorkerFailure(code: .layerMismatch, message: "assignment for a \(a.modelLayers)-layer model; this model has \(c.layerCount)")
        }
        let needsDictionary = try KVCacheFormats.format(spec: a.kvSpec).needsDictionary  // refuse an unknown spec before loading
        var added: [Range<Int>] = [a.layers]
        var kept: [Segment] = []
        if let old = assignment, old.kvSpec == a.kvSpec, old.dictionaryHash == a.dictionaryHash,
           old.contextCapacity == a.contextCapacity, a.layers.lowerBound <= old.layers.lowerBound,
           a.layers.upperBound >= old.layers.upperBound {
            added = [a.layers.lowerBound..<old.layers.lowerBound, old.layers.upperBound..<a.layers.upperBound].filter { !$0.isEmpty }
            kept = segments
        }
        let loaded = try added.map { Segment(layers: $0, model: try LlamaModel(gguf: gguf, layers: $0, embeddings: false, head: false)) }
        let all = (kept + loaded).sorted { $0.layers.lowerBound < $1.layers.lowerBound }
        let weights = all.reduce(0) { $0 + $1.model.weightBytes }
        let cachePerLayer = a.contextCapacity * c.kvDim * 2 * MemoryLayout<Float>.size
        let needed = UInt64(weights + cachePerLayer * a.layers.count)
        guard needed <= configuration.memoryBudgetBytes else {
            throw WorkerFailure(code: .outOfMemory, message: "layers \(a.layers) need \(needed) bytes (weights + one full fp32 cache); the budget is \(configuration.memoryBudgetBytes)")
        }
        if kept.isEmpty { sessions = [:] }
        segments = all
        assignment = a
        cacheType = needsDictionary ? dictionary.flatMap { $0.contentHash == a.dictionaryHash ? try? KVCacheType(parsing: a.kvSpec, dictionary: $0) : nil }
                          : try KVCacheType(parsing: a.kvSpec)
        if case .peer(let e) = a.nextHop {
            next = e.description
            _ = try peer(e.description)
        } else {
            next = nil
        }
        let what = kept.isEmpty ? "loaded" : "extended to"
        logger.info("\(what) layers \(a.layers.lowerBound)..<\(a.layers.upperBound) (\(weights) bytes in \(segments.count) segment(s)), kv \(a.kvSpec), next hop \(a.nextHop)")
        try up.send(WireMessage(.shardReady(ShardReadyBody(layers: a.layers, weightBytes: UInt64(weights)))),
                    timeout: .seconds(10))
    }

    private func installDictionary(_ d: DictionaryBody) throws {
        let path = configuration.temporaryDirectory + "/sparsekv-\(configuration.id)-\(ProcessInfo.processInfo.processIdentifier).csr.gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard FileManager.default.createFile(atPath: path, contents: Data(d.gguf)) else {
            throw WorkerFailure(code: .internalError, message: "cannot write \(path)")
        }
        let loaded: CSRDictionary
        do { loaded = try CSRDictionary.load(path: path) } catch {
            throw WorkerFailure(code: .dictionaryMismatch, message: "the dictionary does not load: \(error.localizedDescription)")
        }
        guard loaded.contentHash == d.contentHash else {
            throw WorkerFailure(code: .dictionaryMismatch,
                                message: "the dictionary's content hash is \(loaded.contentHash), the coordinator announced \(d.contentHash)")
        }
        do { try loaded.check(model: CSRDictionary.ModelInfo(model: base)) } catch {
            throw WorkerFailure(code: .dictionaryMismatch, message: "the dictionary is not for this model: \(error.localizedDescription)")
        }
        if let a = assignment, (try? KVCacheFormats.format(spec: a.kvSpec))?.needsDictionary == true {
            guard a.dictionaryHash == loaded.contentHash else {
                throw WorkerFailure(code: .dictionaryMismatch, message: "the assignment names dictionary \(a.dictionaryHash), received \(loaded.contentHash)")
            }
            cacheType = try KVCacheType(parsing: a.kvSpec, dictionary: loaded)
        }
        dictionary = loaded
        logger.info("dictionary \(loaded.contentHash.prefix(16))… loaded and checked")
        try up.send(WireMessage(.dictionaryAck(contentHash: loaded.contentHash)), timeout: .seconds(10))
    }

    // MARK: - Pipeline

    /// Runs this worker's layers on the hidden states in `message` and sends them on. The
    /// states are taken out of the message (its body becomes a ping) and changed in place:
    /// with the message's own copy gone, a long prompt's states are not copied before the
    /// layers run.
    private func runLayers(taking message: inout WireMessage) throws {
        guard case .activations(var a) = message.body else { return }
        let m = WireMessage(.ping(nonce: 0), requestID: message.requestID, sessionID: message.sessionID)
        message = m
        var hidden = a.hidden
        a.hidden = []
        guard let assignment, let cacheType, !segments.isEmpty else {
            throw WorkerFailure(code: .unexpectedMessage, message: "activations before the shard (and its dictionary) is ready")
        }
        let layers = assignment.layers
        guard a.nextLayer == layers.lowerBound else {
            throw WorkerFailure(code: .layerMismatch, message: "activations for layer \(a.nextLayer); this worker serves \(layers.lowerBound)..<\(layers.upperBound)")
        }
        guard a.hiddenDim == base.config.embeddingLength else {
            throw WorkerFailure(code: .malformedMessage, message: "hidden dim \(a.hiddenDim), the model's is \(base.config.embeddingLength)")
        }
        guard a.startPosition + a.tokenCount <= assignment.contextCapacity else {
            throw WorkerFailure(code: .capacityExceeded, message: "positions up to \(a.startPosition + a.tokenCount) exceed the context capacity \(assignment.contextCapacity)")
        }
        if let latest = latestRequest[m.sessionID], m.requestID < latest {
            throw WorkerFailure(code: .unexpectedMessage, message: "states of session \(m.sessionID) under request \(m.requestID), older than its request \(latest) (from before a failover); dropped")
        }
        if a.startPosition == 0 {
            sessions[m.sessionID] = Dictionary(uniqueKeysWithValues: segments.map {
                ($0.layers.lowerBound, $0.model.makeCache(cacheType, capacity: assignment.contextCapacity))
            })
            streams[m.sessionID] = nil
        } else {
            cutBack(session: m.sessionID, to: a.startPosition, requestID: m.requestID)
        }
        latestRequest[m.sessionID] = max(latestRequest[m.sessionID] ?? 0, m.requestID)
        guard let held = sessions[m.sessionID] else {
            throw WorkerFailure(code: .unknownSession, message: "session \(m.sessionID) is not held here (start position \(a.startPosition))")
        }
        let caches = try segments.map { segment -> any KVCache in
            guard let cache = held[segment.layers.lowerBound] else {
                throw WorkerFailure(code: .unknownSession, message: "session \(m.sessionID) has no KV here for layers \(segment.layers.lowerBound)..<\(segment.layers.upperBound)")
            }
            guard cache.tokenCount == a.startPosition else {
                throw WorkerFailure(code: .unexpectedMessage, message: "session \(m.sessionID) holds \(cache.tokenCount) tokens for layers \(segment.layers.lowerBound)..<\(segment.layers.upperBound), activations start at \(a.startPosition)")
            }
            return cache
        }
        for (segment, cache) in zip(segments, caches) {
            try segment.model.forward(&hidden, count: a.tokenCount, layers: segment.layers, cache: cache)
        }
        // The replicas' update goes first, so a replica is at most the forwarded token behind.
        if a.phase == .decode { try streamDecoded(a, message: m, caches: caches) }
        var out = a
        out.nextLayer = layers.upperBound
        let kvHere = caches.reduce(UInt64(0)) { $0 + UInt64($1.byteCount) }
        out.kvBytes = a.kvBytes + kvHere
        out.kvBytesByWorker.append(WorkerKVBytes(worker: configuration.id, bytes: kvHere))
        out.hidden = hidden
        let forward = WireMessage(.activations(out), requestID: m.requestID, sessionID: m.sessionID)
        do {
            try (next.map(peer) ?? up).send(forward, timeout: .seconds(30))
        } catch {
            throw WorkerFailure(code: .unreachable, message: "cannot reach the next hop: \(error.localizedDescription)")
        }
    }

    // MARK: - KV transfer

    /// Sends a session's KV for some of this worker's layers to another worker: in the
    /// cache's own encoding (CSR codes stamped with the dictionary hash, or dense), or
    /// converted to dense fp16 (the baseline). The layers must lie in one segment.
    private func sendKV(_ r: KVRequestBody, message m: WireMessage) throws {
        if r.mode == .stream {
            guard sessions[m.sessionID] != nil else { throw WorkerFailure(code: .unknownSession, message: "session \(m.sessionID) is not held here") }
            streams[m.sessionID] = Dictionary(uniqueKeysWithValues: segments.map { ($0.layers.lowerBound, r.destination.description) })
            _ = try peer(r.destination.description)
            logger.info("streaming session \(m.sessionID)'s decoded tokens to \(r.destination)")
            return
        }
        if r.mode == .replica { return try startReplica(r, message: m) }
        if r.mode == .install, r.destination.description == ownEndpoint { return try installFromReplica(r, message: m) }
        let candidates = Array(sessions[m.sessionID]?.values ?? [:].values) + Array(replicas[m.sessionID]?.values ?? [:].values)
        guard !candidates.isEmpty else {
            throw WorkerFailure(code: .unknownSession, message: "session \(m.sessionID) is not held here")
        }
        guard let cache = candidates.first(where: {
            r.layers.lowerBound >= $0.geometry.layers.lowerBound && r.layers.upperBound <= $0.geometry.layers.upperBound
        }) else {
            let held = candidates.map { "\($0.geometry.layers.lowerBound)..<\($0.geometry.layers.upperBound)" }.sorted()
            throw WorkerFailure(code: .layerMismatch, message: "layers \(r.layers.lowerBound)..<\(r.layers.upperBound) requested; session \(m.sessionID) is held here for \(held.joined(separator: ", "))")
        }
        let payload: [UInt8]
        do { payload = try cache.transferPayload(layers: r.layers, encoding: r.encoding) } catch let e as KVCacheError {
            guard case .unsupportedEncoding = e else { throw e }
            throw WorkerFailure(code: .unexpectedMessage, message: "the session's \(e.localizedDescription)")
        }
        let hash = try dictionaryHash(for: r.encoding)
        let link = try peer(r.destination.description)
        do {
            try link.send(WireMessage(.kvTransfer(KVTransferBody(layers: r.layers, encoding: r.encoding, dictionaryHash: hash,
                                                                 mode: r.mode, payload: payload)),
                                      requestID: m.requestID, sessionID: m.sessionID), timeout: .seconds(60))
        } catch {
            throw WorkerFailure(code: .unreachable, message: "cannot reach \(r.destination): \(error.localizedDescription)")
        }
        logger.info("sent session \(m.sessionID) layers \(r.layers.lowerBound)..<\(r.layers.upperBound) to \(r.destination): \(payload.count) bytes of \(r.encoding) (\(r.mode))")
    }

    /// Decodes a received cache completely (refusing CSR payloads coded with another
    /// dictionary). Install mode makes it the session's cache for its segment (splitting a
    /// freshly added segment to match), or a replica when no segment holds those layers;
    /// measure mode discards it after the check.
    private func receiveKV(_ t: KVTransferBody, message m: WireMessage, from received: ReceivedMessage) throws {
        guard let assignment else { throw WorkerFailure(code: .unexpectedMessage, message: "a KV transfer before any assignment") }
        let capacity = assignment.contextCapacity
        if t.mode == .stream, try applyToReplica(t, message: m, from: received) { return }
        if t.mode == .stream {
            // Measured streaming (no replica kept here): check it completely, count it (the socket did), discard it.
            let format = try knownFormat(t.encoding)
            let checked = try format.checkAppendPayload(t.payload, codec: try codec(for: format, hash: t.dictionaryHash))
            logger.debug("stream of session \(m.sessionID) layers \(t.layers.lowerBound)..<\(t.layers.upperBound) from \(received.peer): token \(checked.first), \(t.payload.count) bytes")
            return
        }
        let cache = try decodePayload(t, capacity: capacity)
        if t.mode == .install {
            try install(cache, layers: t.layers, session: m.sessionID)
        } else if t.mode == .replica {
            replicas[m.sessionID, default: [:]][t.layers.lowerBound] = cache
        }
        let ack = WireMessage(.kvTransferAck(KVTransferAckBody(
            layers: t.layers, tokenCount: cache.tokenCount, mode: t.mode, payloadBytes: UInt64(t.payload.count),
            wireBytes: UInt64(received.wireBytes))), requestID: m.requestID, sessionID: m.sessionID)
        let verb = t.mode == .install ? "installed" : t.mode == .replica ? "kept a replica of" : "checked and discarded"
        logger.info("\(verb) session \(m.sessionID) layers \(t.layers.lowerBound)..<\(t.layers.upperBound) from \(received.peer): \(cache.tokenCount) tokens, \(t.payload.count) bytes of \(t.encoding)")
        reply(to: received, ack)
        if received.peer != coordinatorPeerID {
            do { try up.send(ack, timeout: .seconds(5)) } catch { logger.warning("could not tell the coordinator: \(error)") }
        }
    }

    /// Whether `layers` is (or can be made) a segment of this worker for the session's
    /// cache. A segment that no session holds a cache for yet (freshly added by a drain)
    /// is split so that `layers` becomes one of its pieces.
    func segmentForInstall(_ layers: Range<Int>, session: UInt64) throws -> Bool {
        if segments.contains(where: { $0.layers == layers }) { return true }
        guard let i = segments.firstIndex(where: { $0.layers.lowerBound <= layers.lowerBound && layers.upperBound <= $0.layers.upperBound })
        else { return false }
        let whole = segments[i].layers
        guard !sessions.values.contains(where: { $0[whole.lowerBound] != nil }) else { return false }
        let pieces = [whole.lowerBound..<layers.lowerBound, layers, layers.upperBound..<whole.upperBound].filter { !$0.isEmpty }
        let split = try pieces.map { Segment(layers: $0, model: try LlamaModel(gguf: gguf, layers: $0, embeddings: false, head: false)) }
        segments.replaceSubrange(i...i, with: split)
        logger.info("split layers \(whole.lowerBound)..<\(whole.upperBound) into \(pieces.map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ")) for incoming KV")
        return true
    }

    func peer(_ endpoint: String) throws -> CountedSocket {
        if let p = peers[endpoint] { return p }
        var options = ZMQSocketOptions()
        options.routingID = Array(configuration.id.utf8)
        // Counted under the endpoint without its key.
        let s = try CountedSocket(context: context, kind: .dealer, counters: counters, peerLabel: ZMQCurve.splitServerKey(endpoint).endpoint,
                                  options: configuration.security.client(options))
        try s.connect(endpoint)
        peers[endpoint] = s
        return s
    }

    func clip(_ s: String) -> String {
        var s = s
        while s.utf8.count > WireProtocol.maxErrorMessageLength { s.removeLast() }
        return s
    }
}

/// A request the worker refuses, with the wire error code to answer with.
struct WorkerFailure: LocalizedError {
    let code: WireErrorCode
    let message: String
    var errorDescription: String? { message }
}
