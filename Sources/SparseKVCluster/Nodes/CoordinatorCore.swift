import Logging

/// The coordinator's decisions about its workers, free of I/O: registration (standbys
/// included), the shard plan, readiness, liveness, drains and failovers. Each event
/// returns ``CoordinatorAction``s that the socket loop (``Coordinator``) carries out in
/// order; time enters only through the events' `now`.
///
/// The sessions' admission and step deadlines, KV transfers, kept replicas, replica
/// installs and prefill -> decode handoffs are decided here too (``SessionTable``,
/// CoordinatorCore+Sessions.swift); the sessions themselves (GenerationSession, with the
/// model) stay with the loop: the core tells it when to park, resume, recompute or fail
/// them, and the loop tells the core when they start, step, are parked and end.
///
/// Registration and plan here; drains in CoordinatorCore+Drain.swift; liveness and
/// failover in CoordinatorCore+Failover.swift; sessions in CoordinatorCore+Sessions.swift.
public struct CoordinatorCore: Sendable {
    /// What the core knows of the cluster it runs: fixed at startup.
    public struct Settings: Sendable {
        /// Workers to wait for before planning shards.
        public var workerCount: Int
        /// Workers of the prefill pipeline (0: one pipeline), as ``CoordinatorConfiguration/prefillWorkers``.
        public var prefillWorkers = 0
        public var layerCount: Int
        /// Weights of one layer plus one session's full-context fp32 cache for it.
        public var bytesPerLayer: UInt64
        /// The dictionary's size (every worker holds it besides its layers); 0 without one.
        public var dictionaryBytes: UInt64 = 0
        /// The dictionary's content hash; nil when the cache needs none.
        public var dictionaryHash: String?
        /// Fingerprint of the coordinator's GGUF file; workers must match it.
        public var modelFingerprint: String
        /// The `--kv` spec and the cache kind it makes (e.g. "csr", "fp32").
        public var kvSpec: String
        public var cacheKind: String
        /// Positions per session.
        public var contextLength: Int
        public var heartbeat = HeartbeatMonitor.Settings()
        /// How long a drain, a failover, a replica install or a session's step may take.
        public var stepTimeout: Duration = .seconds(120)
        /// Whether sessions keep replicas of their KV: `--replicas 1` and a cache whose
        /// append payloads a replica can take.
        public var replicas = true
        /// Sessions generating at once; later requests wait for their turn.
        public var maxSessions = 4
        /// The encoding of a handoff's measured baseline wave ("" for none), as ``CoordinatorConfiguration/handoffBaseline``.
        public var handoffBaseline = ""

        public init(workerCount: Int, layerCount: Int, bytesPerLayer: UInt64, modelFingerprint: String, kvSpec: String,
                    cacheKind: String, contextLength: Int) {
            self.workerCount = workerCount
            self.layerCount = layerCount
            self.bytesPerLayer = bytesPerLayer
            self.modelFingerprint = modelFingerprint
            self.kvSpec = kvSpec
            self.cacheKind = cacheKind
            self.contextLength = contextLength
        }
    }

    public enum Phase: Equatable, Sendable { case registering, starting, serving }

    /// A registered worker as the plan sees it.
    public struct Worker: Equatable, Sendable {
        public let id: String
        public let routingID: [UInt8]
        public let endpoint: Endpoint
        public let budget: UInt64
        public var layers: Range<Int>?
        /// The pieces of `layers` the worker holds separate caches for (see Worker).
        public var segments: [Range<Int>] = []
        /// 0, or 1 for the decode pipeline of a prefill -> decode handoff; ``standby`` without layers.
        public var pipeline = 0
        public var ready = false
        public var dictionaryAcked = false
    }

    /// The pipeline number of a worker that registered after the start: it holds no layers.
    public static let standby = -1

    public let settings: Settings
    public internal(set) var phase = Phase.registering
    /// Registered workers: the pipeline(s) in layer order, then standbys.
    public internal(set) var workers: [Worker] = []
    /// Liveness of every registered worker.
    var monitor: HeartbeatMonitor
    /// The drain in progress, if any.
    public internal(set) var drain: DrainState?
    /// The failover in progress, if any.
    public internal(set) var recovery: FailoverTracker?
    /// Why the cluster cannot serve any more (a death it could not recover from, or shutdown).
    public internal(set) var broken: String?
    /// During a failover: the dead workers' segments, and whether every live worker kept
    /// its caches (so replicas can stand in for the dead ones' KV).
    var lostSegments: [String: [Range<Int>]] = [:]
    var failoverKeepsCaches = true
    /// The running sessions' replicas, installs, handoffs and KV transfers.
    public internal(set) var sessions = SessionTable()

    public init(settings: Settings) {
        self.settings = settings
        monitor = HeartbeatMonitor(settings: settings.heartbeat)
    }

    // MARK: - Registration

    /// A worker asks to join. Before the start it counts towards `workerCount` (the last
    /// one triggers the shard plan); once the cluster serves it becomes a standby: it gets
    /// the dictionary (and must ack its hash) but no layers.
    public mutating func register(_ b: RegisterBody, peer: String, routingID: [UInt8]?, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        func refuse(_ code: WireErrorCode, _ why: String) -> [CoordinatorAction] {
            [.log(.warning, "refused worker \(b.workerID): \(why)"), .answer(.error(ErrorBody(code: code, message: Self.clip(why))))]
        }
        guard phase == .registering || phase == .serving else {
            return refuse(.unexpectedMessage, "the cluster is starting with its \(settings.workerCount) workers; register again once it is ready")
        }
        guard workers.count < WireProtocol.maxWorkers else { return refuse(.unexpectedMessage, "the cluster has \(workers.count) workers, the most it numbers") }
        guard b.modelFingerprint == settings.modelFingerprint else {
            return refuse(.modelMismatch, "model fingerprint \(b.modelFingerprint) differs from the coordinator's \(settings.modelFingerprint); run every process on the same GGUF file")
        }
        guard b.workerID != coordinatorPeerID, !b.workerID.hasSuffix(WireProtocol.heartbeatSuffix), peer == b.workerID else {
            return refuse(.malformedMessage, "worker id '\(b.workerID)' must be the socket's routing id, not '\(coordinatorPeerID)' and not end in '\(WireProtocol.heartbeatSuffix)'")
        }
        guard !workers.contains(where: { $0.id == b.workerID }) else {
            return refuse(.unexpectedMessage, "a worker named \(b.workerID) is already registered; give each worker its own --id")
        }
        guard let routingID else { return [] }
        workers.append(Worker(id: b.workerID, routingID: routingID, endpoint: b.peerEndpoint, budget: b.memoryBudgetBytes))
        monitor.add(b.workerID, now: now)
        let ack = CoordinatorAction.answer(.registerAck(workerIndex: workers.count - 1))
        guard phase == .serving else {
            let line = CoordinatorAction.log(.info, "registered \(b.workerID) at \(b.peerEndpoint), budget \(b.memoryBudgetBytes) bytes (\(workers.count)/\(settings.workerCount))")
            return [ack, line] + (workers.count == settings.workerCount ? assignShards() : [])
        }
        workers[workers.count - 1].pipeline = Self.standby
        return [ack, .connectStandby(worker: b.workerID), .log(.info, "registered \(b.workerID) at \(b.peerEndpoint) as a standby (no layers)")]
            + (settings.dictionaryHash != nil ? [.sendDictionary(worker: b.workerID)] : [])
    }

    /// The link to a new standby could not be opened: it is forgotten.
    public mutating func standbyUnreachable(_ id: String) {
        monitor.remove(id)
        workers.removeAll { $0.id == id && $0.pipeline == Self.standby }
    }

    /// Plans contiguous shards by memory budget. With a handoff, both pipelines get one
    /// split, planned on the smaller budget of each (prefill, decode) pair, so KV moves one
    /// to one between counterparts.
    private mutating func assignShards() -> [CoordinatorAction] {
        let k = settings.prefillWorkers
        let pairs = k > 0 ? (0..<k).map { [$0, $0 + k] } : workers.indices.map { [$0] }
        let plan: [Range<Int>]
        do {
            plan = try ShardPlanner.plan(layerCount: settings.layerCount,
                                         budgets: pairs.map { $0.map { workers[$0].budget }.min() ?? 0 },
                                         bytesPerLayer: settings.bytesPerLayer, fixedBytes: settings.dictionaryBytes,
                                         names: pairs.map { $0.map { workers[$0].id }.joined(separator: "/") })
        } catch {
            let why = Self.clip(error.localizedDescription)
            return workers.map { .send(worker: $0.id, WireMessage(.error(ErrorBody(code: .outOfMemory, message: why)))) }
                + [.abort(error as? NodeError ?? .badConfiguration(error.localizedDescription))]
        }
        phase = .starting
        for (p, pair) in pairs.enumerated() {
            for (pipeline, i) in pair.enumerated() {
                workers[i].layers = plan[p]
                workers[i].segments = [plan[p]]
                workers[i].pipeline = pipeline
            }
        }
        var actions = workers.map { CoordinatorAction.connect(worker: $0.id) }
        for i in workers.indices {
            let w = workers[i], layers = w.layers ?? 0..<0
            actions.append(.send(worker: w.id, WireMessage(.shardAssignment(assignment(for: i)))))
            if settings.dictionaryHash != nil { actions.append(.sendDictionary(worker: w.id)) }
            let role = k > 0 ? (w.pipeline == 0 ? " (prefill)" : " (decode)") : ""
            actions.append(.log(.info, "assigned layers \(layers.lowerBound)..<\(layers.upperBound) to \(w.id)\(role)"))
        }
        return actions
    }

    // MARK: - Readiness

    /// A worker reports the layers it loaded: for a drain's receiver, a failover's new
    /// plan, or the first plan (where any other range is a fatal mismatch).
    public mutating func shardReady(_ id: String, layers: Range<Int>, weightBytes: UInt64, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard let i = index(ofWorker: id) else { return [] }
        if drainAwaitsReady(from: id) { return drainWorkerReady(id, layers: layers, now: now) }
        if recovery != nil { return recoveryWorkerReady(i, layers: layers, now: now) }
        guard workers[i].layers == layers else {
            return [.abort(.refused(by: id, code: .layerMismatch, message: "reported layers \(layers), assigned \(String(describing: workers[i].layers))"))]
        }
        workers[i].ready = true
        return [.log(.info, "\(id) loaded layers \(layers.lowerBound)..<\(layers.upperBound), \(weightBytes) bytes of weights")] + checkReady()
    }

    /// A worker acks the dictionary's hash. A wrong hash is refused: that worker never
    /// counts as ready, so no inference starts.
    public mutating func dictionaryAck(_ id: String, hash: String, requestID: UInt64) -> [CoordinatorAction] {
        guard let i = index(ofWorker: id) else { return [] }
        if let d = settings.dictionaryHash, hash == d {
            workers[i].dictionaryAcked = true
            return [.log(.info, "\(id) acked dictionary \(hash.prefix(16))…")] + checkReady()
        }
        return [.log(.error, "\(id) acked dictionary \(hash), expected \(settings.dictionaryHash ?? "none"); refused"),
                .send(worker: id, WireMessage(.error(ErrorBody(code: .dictionaryMismatch, message: Self.clip(
                    "you acknowledged dictionary \(hash); the cluster's is \(settings.dictionaryHash ?? "none (no csr cache)")"))), requestID: requestID))]
    }

    /// Whether a worker is loaded and acked (standbys count once they acked).
    public func isReady(_ w: Worker) -> Bool { w.ready && (settings.dictionaryHash == nil || w.dictionaryAcked) }

    mutating func checkReady() -> [CoordinatorAction] {
        guard phase == .starting, recovery == nil else { return [] }
        let serving = workers.filter { $0.pipeline != Self.standby }
        guard !serving.isEmpty, serving.allSatisfy(isReady) else { return [] }
        phase = .serving
        return [.serving]
    }

    /// The cluster stops serving (shutdown): later requests hear `why`.
    public mutating func stop(_ why: String) { broken = why }

    // MARK: - Plan queries

    /// Worker i's layers and next hop (the next worker of its pipeline, or the coordinator).
    public func assignment(for i: Int, layers: Range<Int>? = nil, without gone: Int? = nil) -> ShardAssignmentBody {
        let line = pipeline(workers[i].pipeline).filter { $0 != gone }
        let position = line.firstIndex(of: i) ?? line.count
        let hop: ShardAssignmentBody.NextHop = position + 1 < line.count ? .peer(workers[line[position + 1]].endpoint) : .coordinator
        return ShardAssignmentBody(layers: layers ?? workers[i].layers ?? 0..<0, modelLayers: settings.layerCount, kvSpec: settings.kvSpec,
                                   dictionaryHash: settings.dictionaryHash ?? "", contextCapacity: settings.contextLength, nextHop: hop)
    }

    /// Worker indices of pipeline `p`, in layer order.
    public func pipeline(_ p: Int) -> [Int] { workers.indices.filter { workers[$0].pipeline == p } }

    public func index(ofWorker id: String) -> Int? { workers.firstIndex { $0.id == id } }

    /// The layer-holding workers, for the log ("w1 0..<10, w2 10..<30").
    var planDescription: String {
        workers.compactMap { w in w.layers.map { "\(w.id) \($0.lowerBound)..<\($0.upperBound)" } }.joined(separator: ", ")
    }

    /// A message cut to what an error body may carry.
    public static func clip(_ s: String) -> String {
        var s = s
        while s.utf8.count > WireProtocol.maxErrorMessageLength { s.removeLast() }
        return s
    }

    static func milliseconds(_ d: Duration) -> UInt64 {
        let (s, atto) = d.components
        return UInt64(max(0, s)) * 1_000 + UInt64(max(0, atto) / 1_000_000_000_000_000)
    }
}
