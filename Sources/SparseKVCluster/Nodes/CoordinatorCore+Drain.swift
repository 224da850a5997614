import SparseKVEngine
// Draining a worker, the core's side: its layers go to its pipeline neighbours (the
// previous worker takes the first half, rounded up, the next one the rest; a worker at
// either end hands everything to its one neighbour) and every live session's KV with
// them. The loop parks each session's next states; once all are parked
// (``CoordinatorCore/sessionsParked(_:now:)``) the receivers load their added layers, then
// the KV moves (kvRequests, SessionTable's transfers), then an optional measured baseline wave, then
// the drained worker shuts down and the parked states go on.

extension CoordinatorCore {
    public struct DrainState: Sendable {
        public enum Step: Equatable, Sendable {
            /// Parking sessions as their states come back.
            case waiting
            /// The receivers are loading their added layers; these have not reported yet.
            case loading(Set<String>)
            /// KV requests are out.
            case transferring
        }

        public struct Move: Equatable, Sendable {
            /// A piece of the drained worker's layers, within one of its segments.
            public let layers: Range<Int>
            public let to: String
        }

        public let client: [UInt8]
        public let requestID: UInt64
        public let request: DrainRequestBody
        /// The drained worker's layers.
        public let layers: Range<Int>
        /// Layers each receiving worker serves once the drain is done.
        public let newLayers: [String: Range<Int>]
        /// Who takes which piece.
        public let moves: [Move]
        public internal(set) var step = Step.waiting
        public internal(set) var sessions: [UInt64] = []
        public internal(set) var transfers: [DrainReplyBody.Transfer] = []
        /// The drain's kvRequests not yet acked.
        public internal(set) var outstanding = 0
        /// When every live session was parked (the move starts).
        var paused: ContinuousClock.Instant?
        var deadline: ContinuousClock.Instant?
    }

    /// A client asks to drain a worker. Refused (with a reason the client can act on)
    /// before the cluster serves, during another drain or a failover, for a standby, or
    /// when no neighbour can take the layers within its budget.
    public mutating func requestDrain(_ d: DrainRequestBody, client: [UInt8]?, requestID: UInt64) -> [CoordinatorAction] {
        func refuse(_ code: WireErrorCode, _ why: String) -> [CoordinatorAction] {
            [.log(.warning, "drain of \(d.workerID) refused: \(why)"), .answer(.error(ErrorBody(code: code, message: Self.clip(why))))]
        }
        guard phase == .serving, let client else { return refuse(.unexpectedMessage, "the cluster is not serving yet") }
        if let other = drain { return refuse(.unexpectedMessage, "a drain of \(other.request.workerID) is in progress") }
        if let r = recovery { return refuse(.unexpectedMessage, "a failover of \(r.lost.joined(separator: ", ")) is in progress; drain once it is done") }
        if let broken { return refuse(.unreachable, broken) }
        guard settings.prefillWorkers == 0 else {
            return refuse(.unexpectedMessage, "drain is not supported with --prefill-workers: the prefill and decode pipelines must keep matching layer splits")
        }
        guard let x = index(ofWorker: d.workerID) else {
            return refuse(.unexpectedMessage, "no worker named \(d.workerID); the workers are \(workers.map(\.id).joined(separator: ", "))")
        }
        guard let layers = workers[x].layers else { return refuse(.unexpectedMessage, "\(d.workerID) is a standby and holds no layers") }
        guard d.baseline.isEmpty || (try? KVCacheFormats.format(kind: settings.cacheKind))?.transferEncodings.contains(d.baseline) == true
        else {
            return refuse(.unexpectedMessage, "baseline '\(d.baseline)': a transfer can be measured as 'fp16' or as the cache's own '\(settings.cacheKind)'")
        }
        let line = pipeline(workers[x].pipeline)
        guard line.count >= 2, let position = line.firstIndex(of: x) else {
            return refuse(.unexpectedMessage, "\(d.workerID) is the only worker; no one can take its layers")
        }
        let previous = position > 0 ? line[position - 1] : nil
        let next = position + 1 < line.count ? line[position + 1] : nil
        let cut = previous == nil ? layers.lowerBound : next == nil ? layers.upperBound : layers.lowerBound + (layers.count + 1) / 2
        var moves: [DrainState.Move] = []
        var newLayers: [String: Range<Int>] = [:]
        for (neighbour, part) in [(previous, layers.lowerBound..<cut), (next, cut..<layers.upperBound)] {
            guard let n = neighbour, !part.isEmpty, let held = workers[n].layers else { continue }
            for segment in workers[x].segments {
                let piece = segment.clamped(to: part)
                if !piece.isEmpty { moves.append(DrainState.Move(layers: piece, to: workers[n].id)) }
            }
            let grown = min(held.lowerBound, part.lowerBound)..<max(held.upperBound, part.upperBound)
            let need = UInt64(grown.count) * settings.bytesPerLayer + settings.dictionaryBytes
            guard need <= workers[n].budget else {
                return refuse(.outOfMemory, "\(workers[n].id) would serve layers \(grown.lowerBound)..<\(grown.upperBound), which need \(need) bytes; its budget is \(workers[n].budget)")
            }
            newLayers[workers[n].id] = grown
        }
        drain = DrainState(client: client, requestID: requestID, request: d, layers: layers, newLayers: newLayers, moves: moves)
        return [.log(.info, "drain of \(d.workerID) (layers \(layers.lowerBound)..<\(layers.upperBound)): \(moves.map { "\($0.layers.lowerBound)..<\($0.layers.upperBound) to \($0.to)" }.joined(separator: ", ")); pausing sessions")]
    }

    /// Whether a session's next states wait for the drain (it generated `generated` tokens).
    public func drainHolds(generated: Int) -> Bool {
        guard let d = drain else { return false }
        return d.step != .waiting || generated >= d.request.minGenerated
    }

    /// Every live session is parked (these, possibly none): the receivers load their added layers.
    public mutating func sessionsParked(_ sessions: [UInt64], now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard var d = drain, d.step == .waiting else { return [] }
        guard let x = index(ofWorker: d.request.workerID) else { return failDrain("the worker is gone") }
        d.sessions = sessions
        d.paused = now
        d.step = .loading(Set(d.newLayers.keys))
        d.deadline = now + settings.stepTimeout
        drain = d
        var actions: [CoordinatorAction] = [.log(.info, "drain of \(d.request.workerID): \(sessions.count) session(s) paused; neighbours loading their added layers")]
        for (id, layers) in d.newLayers.sorted(by: { $0.key < $1.key }) {
            guard let i = index(ofWorker: id) else { continue }
            actions.append(.send(worker: id, WireMessage(.shardAssignment(assignment(for: i, layers: layers, without: x)))))
        }
        return actions
    }

    func drainAwaitsReady(from id: String) -> Bool {
        if case .loading(let waiting)? = drain?.step { return waiting.contains(id) }
        return false
    }

    /// A receiver serves its grown range; once all do, the KV moves.
    mutating func drainWorkerReady(_ id: String, layers: Range<Int>, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard var d = drain, case .loading(var waiting) = d.step else { return [] }
        guard layers == d.newLayers[id] else {
            return failDrain("\(id) reported layers \(layers.lowerBound)..<\(layers.upperBound), expected \(String(describing: d.newLayers[id]))")
        }
        waiting.remove(id)
        d.step = waiting.isEmpty ? .transferring : .loading(waiting)
        drain = d
        guard waiting.isEmpty else { return [] }
        return drainWave(encoding: settings.cacheKind, mode: .install, now: now)
    }

    /// One KV request per session and move, or the next stage when there is nothing to send.
    private mutating func drainWave(encoding: String, mode: KVTransferMode, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard var d = drain else { return [] }
        let from = d.request.workerID
        var wave: [CoordinatorAction] = []
        for s in d.sessions {
            for m in d.moves {
                if let request = requestTransfer(session: s, from: from, to: m.to, layers: m.layers, encoding: encoding, mode: mode,
                                                 purpose: .drain, now: now) { wave.append(request) }
            }
        }
        guard !wave.isEmpty else { return finishDrain(now: now) }
        d.outstanding = wave.count
        drain = d
        return wave
    }

    /// A receiver acked one of the drain's transfers. After the moves, the baseline wave
    /// (if asked for); after that, the end.
    public mutating func drainTransferAcked(_ t: DrainReplyBody.Transfer, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard var d = drain, d.step == .transferring, d.outstanding > 0 else { return [] }
        d.transfers.append(t)
        d.outstanding -= 1
        drain = d
        guard d.outstanding == 0 else { return [] }
        let measured = d.transfers.contains { $0.mode == .measure }
        if !d.request.baseline.isEmpty, !measured { return drainWave(encoding: d.request.baseline, mode: .measure, now: now) }
        return finishDrain(now: now)
    }

    /// All KV is over: the receivers serve the drained layers, the drained worker goes,
    /// the client gets the transfers, and the parked sessions go on.
    private mutating func finishDrain(now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard let d = drain else { return [] }
        guard let x = index(ofWorker: d.request.workerID) else { return failDrain("the worker is gone") }
        for (id, layers) in d.newLayers {
            guard let i = index(ofWorker: id) else { continue }
            let pieces = d.moves.filter { $0.to == id }.map(\.layers)
            workers[i].segments = (workers[i].segments + pieces).sorted { $0.lowerBound < $1.lowerBound }
            workers[i].layers = layers
        }
        let gone = workers.remove(at: x)
        monitor.remove(gone.id)
        drain = nil
        let elapsed = d.paused.map { Self.nanoseconds(now - $0) } ?? 0
        let reply = DrainReplyBody(workerID: gone.id, layers: d.layers, nanoseconds: elapsed,
                                   sessionCount: d.sessions.count, transfers: d.transfers)
        let moved = d.transfers.filter { $0.mode == .install }.reduce(UInt64(0)) { $0 + $1.wireBytes }
        // The pipeline changed: every session asks for its replicas again at its next step.
        resetReplicas()
        return [
            .send(worker: gone.id, WireMessage(.shutdown(reason: "drained: layers \(d.layers.lowerBound)..<\(d.layers.upperBound) moved to \(d.newLayers.keys.sorted().joined(separator: ", "))"))),
            .disconnect(worker: gone.id, linger: nil),
            .sendToClient(client: d.client, WireMessage(.drainReply(reply), requestID: d.requestID)),
            .log(.info, "drained \(gone.id) in \(elapsed / 1_000_000) ms: \(d.sessions.count) session(s), \(moved) bytes of KV moved; pipeline now \(planDescription)"),
            .resumeParked,
        ]
    }

    /// Gives up a drain. Before any layer moved, the paused sessions simply go on. After,
    /// the receivers are put back to their old layers (a reload) and the paused sessions
    /// fail, since their KV may be half moved.
    public mutating func failDrain(_ why: String) -> [CoordinatorAction] {
        guard let d = drain else { return [] }
        drain = nil
        sessions.forgetTransfers { $0.purpose == .drain }
        var actions: [CoordinatorAction] = [
            .log(.error, "drain of \(d.request.workerID) failed: \(why)"),
            .sendToClient(client: d.client, WireMessage(.error(ErrorBody(code: .internalError, message: Self.clip("drain of \(d.request.workerID) failed: \(why)"))),
                                                        requestID: d.requestID)),
        ]
        if d.step == .waiting { return actions + [.resumeParked] }
        for id in d.newLayers.keys.sorted() {
            if let i = index(ofWorker: id) { actions.append(.send(worker: id, WireMessage(.shardAssignment(assignment(for: i))))) }
        }
        return actions + [.failParked("the drain of \(d.request.workerID) failed while its KV moved: \(why)")]
    }

    /// A drain whose loading or transfers outlast the step timeout fails.
    mutating func drainTick(now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard let d = drain, d.step != .waiting, let deadline = d.deadline, deadline < now else { return [] }
        return failDrain("not done within \(settings.stepTimeout)")
    }

    static func nanoseconds(_ d: Duration) -> UInt64 {
        let (s, atto) = d.components
        return UInt64(max(0, s)) * 1_000_000_000 + UInt64(max(0, atto) / 1_000_000_000)
    }
}
