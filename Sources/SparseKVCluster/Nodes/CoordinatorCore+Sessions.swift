// The sessions, the core's side (state in SessionTable): which requests are refused or
// may start, which step outlasted its deadline, the KV transfers asked for them
// and what each ack or failure means, their kept replicas, and how a failover rebuilds
// them. At a session's first decode step on a plan, every pipeline worker is asked to
// send its KV for each of its segments to its replica holder (the next worker of the
// pipeline, wrapping around) and then to stream each decoded token's KV there
// (Worker+Replica.swift); the holder acks the full copy. When a worker dies and every
// live worker kept its caches, the holders install the dead worker's KV on whoever took
// its layers, and the session goes on from the replicas' last token: no recompute of the
// prompt. A session without a complete replica, a plan that reloaded a live worker, an
// install that fails or is not acked within the step timeout: the session is recomputed.

extension CoordinatorCore {
    /// The pipeline whose workers keep replicas of each other's KV: the decode pipeline of
    /// a handoff (sessions decode there), else the one pipeline.
    public var replicaPipeline: Int { settings.prefillWorkers > 0 ? 1 : 0 }

    /// Whether sessions decoding on pipeline `p` keep replicas: asked for, and `p` is the
    /// replica pipeline with at least two workers.
    public func keepsReplicas(pipeline p: Int) -> Bool { settings.replicas && p == replicaPipeline && pipeline(p).count >= 2 }

    // MARK: - Admission and step deadlines

    /// Why a generate request whose prompt has `promptTokens` tokens is refused at once (a
    /// cluster that cannot serve, is not ready yet, or a prompt the context cannot hold;
    /// nil tokens: the cluster alone, before tokenizing); nil when it waits for its turn.
    public func refusal(promptTokens: Int?) -> ErrorBody? {
        if let broken { return ErrorBody(code: .unreachable, message: Self.clip(broken)) }
        guard phase == .serving else {
            let missing = workers.filter { !isReady($0) }.map(\.id)
            return ErrorBody(code: .unexpectedMessage, message: Self.clip(
                "the cluster is not ready: \(workers.count)/\(settings.workerCount) workers registered" + (missing.isEmpty ? "" : ", waiting for \(missing.joined(separator: ", "))")))
        }
        guard let promptTokens else { return nil }
        guard promptTokens >= 1, promptTokens < settings.contextLength else {
            return ErrorBody(code: .capacityExceeded, message: "the prompt has \(promptTokens) tokens; 1...\(settings.contextLength - 1) fit the context")
        }
        return nil
    }

    /// Whether a waiting request may start now: the cluster serves, no drain or failover
    /// runs, and fewer than ``Settings/maxSessions`` sessions generate.
    public var startsSessions: Bool {
        phase == .serving && drain == nil && recovery == nil && broken == nil && sessions.entries.count < settings.maxSessions
    }

    /// A session's states went into the pipeline: they must be back within the step timeout.
    public mutating func stepSent(_ id: UInt64, now: ContinuousClock.Instant) {
        let deadline = now + settings.stepTimeout
        sessions.entries[id]?.stepDeadline = deadline
    }

    /// A session's next states are held back (a drain, a handoff): no step runs.
    public mutating func sessionParked(_ id: UInt64) {
        sessions.entries[id]?.stepDeadline = nil
    }

    /// Sessions whose states did not come back within the step timeout fail. A failover
    /// pauses every session (no deadline runs) until it rebuilds them, so a death the
    /// cluster recovers from fails none; one it cannot recover from fails them all at once.
    mutating func stepTick(now: ContinuousClock.Instant) -> [CoordinatorAction] {
        var actions: [CoordinatorAction] = []
        for id in sessions.entries.keys.sorted() {
            guard let deadline = sessions.entries[id]?.stepDeadline, deadline < now else { continue }
            sessions.entries[id]?.stepDeadline = nil
            actions.append(.failSession(id, code: .unreachable, message: "no hidden states came back within \(settings.stepTimeout); is every worker alive?"))
        }
        return actions
    }

    // MARK: - Transfers

    /// A request id for a control message (a session's activations after a (re)start).
    public mutating func takeRequestID() -> UInt64 { sessions.takeRequestID() }

    /// A session is admitted with a prompt of `promptTokens`.
    public mutating func sessionStarted(_ id: UInt64, promptTokens: Int) {
        sessions.entries[id] = SessionTable.Entry(promptTokens: promptTokens)
    }

    /// A session ended (finished, failed, cancelled): it is forgotten with its transfers
    /// (a drain's stay: the drain counts them).
    public mutating func sessionEnded(_ id: UInt64) {
        sessions.entries[id] = nil
        sessions.forgetTransfers { $0.sessionID == id && $0.purpose != .drain }
    }

    /// A session's states go into pipeline `line`. At its first decode step on a plan it asks
    /// every worker of the pipeline for a replica of each of its segments.
    public mutating func sessionSends(_ id: UInt64, pipeline line: Int, phase: ActivationsBody.Phase, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard phase == .decode, keepsReplicas(pipeline: line), let e = sessions.entries[id], !e.replicated else { return [] }
        var copies: [ReplicaInstallPlanner.Copy] = []
        var actions: [CoordinatorAction] = []
        for i in pipeline(line) {
            guard let h = replicaHolder(of: i) else { continue }
            for segment in workers[i].segments {
                if let request = requestTransfer(session: id, from: workers[i].id, to: workers[h].id, layers: segment, encoding: settings.cacheKind,
                                                 mode: .replica, purpose: .replica, now: now) { actions.append(request) }
                copies.append(ReplicaInstallPlanner.Copy(source: workers[i].id, holder: workers[h].id, layers: segment))
            }
        }
        sessions.entries[id]?.replicated = true
        sessions.entries[id]?.replicas = copies
        return actions
    }

    /// Records a kvRequest: `from` is to send `layers` of the session to `to`. nil when
    /// either worker is gone.
    mutating func requestTransfer(session: UInt64, from: String, to: String, layers: Range<Int>, encoding: String,
                                  mode: KVTransferMode, purpose: SessionTable.Purpose, now: ContinuousClock.Instant) -> CoordinatorAction? {
        guard index(ofWorker: from) != nil, let target = workers.first(where: { $0.id == to }) else { return nil }
        let id = sessions.takeRequestID()
        sessions.transfers[id] = SessionTable.Transfer(sessionID: session, source: from, layers: layers, destination: to, encoding: encoding,
                                                       mode: mode, purpose: purpose, started: now)
        return .send(worker: from, WireMessage(.kvRequest(KVRequestBody(layers: layers, destination: target.endpoint, encoding: encoding, mode: mode)),
                                               requestID: id, sessionID: session))
    }

    /// Whether `requestID` names a transfer still out (an error about it fails the transfer).
    public func awaitsTransfer(_ requestID: UInt64) -> Bool { sessions.transfers[requestID] != nil }

    // MARK: - Acks and failures

    /// A worker acked a kvRequest: it holds the KV. An ack that matches no transfer still
    /// out (unknown, already failed, or of an earlier plan) is ignored; one that names
    /// other layers, mode, session or receiver than asked fails the transfer. A copy that
    /// lands after its session ended (a replica still crossing a slow link when the last
    /// token came back) came after the session's dropSession: the worker is told to drop
    /// it again, or it would hold that KV for the rest of its life.
    public mutating func transferAcked(requestID: UInt64, sessionID: UInt64, from peer: String, _ ack: KVTransferAckBody,
                                       now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard let t = sessions.transfers[requestID] else {
            if sessions.entries[sessionID] == nil, ack.mode == .replica || ack.mode == .install, index(ofWorker: peer) != nil {
                return [.log(.info, "session \(sessionID) has ended; \(peer) drops the copy of layers \(ack.layers.lowerBound)..<\(ack.layers.upperBound) that reached it late"),
                        .send(worker: peer, WireMessage(.dropSession, sessionID: sessionID))]
            }
            return [.log(.debug, "ack for request \(requestID) from \(peer), not a pending transfer")]
        }
        guard peer == t.destination, ack.layers == t.layers, ack.mode == t.mode, sessionID == t.sessionID else {
            return transferFailed(requestID: requestID, message: "\(peer) acknowledged layers \(ack.layers) (\(ack.mode)) of session \(sessionID); expected \(t.destination), \(t.layers) (\(t.mode)) of session \(t.sessionID)", now: now)
        }
        sessions.transfers[requestID] = nil
        switch t.purpose {
        case .drain:
            if t.mode == .install { sessions.entries[t.sessionID]?.transferBytes += ack.wireBytes }
            return drainTransferAcked(DrainReplyBody.Transfer(
                sessionID: t.sessionID, layers: t.layers, destination: t.destination, encoding: t.encoding, mode: t.mode,
                tokenCount: ack.tokenCount, payloadBytes: ack.payloadBytes, wireBytes: ack.wireBytes,
                nanoseconds: Self.nanoseconds(now - t.started)), now: now)
        case .handoff:
            return handoffAcked(t, wireBytes: ack.wireBytes, now: now)
        case .replica:
            return replicaAcked(t, tokens: ack.tokenCount, wireBytes: ack.wireBytes)
        case .failover:
            return replicaInstalled(t, tokens: ack.tokenCount)
        }
    }

    /// A kvRequest failed (the sender's or the receiver's error, or a wrong ack).
    public mutating func transferFailed(requestID: UInt64, message: String, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard let t = sessions.transfers.removeValue(forKey: requestID) else { return [] }
        let layers = "layers \(t.layers.lowerBound)..<\(t.layers.upperBound)"
        switch t.purpose {
        case .drain:
            return failDrain("moving session \(t.sessionID) \(layers) to \(t.destination): \(message)")
        case .handoff:
            return [.failSession(t.sessionID, code: .internalError, message: "handoff of \(layers): \(message)")]
        case .replica:
            sessions.entries[t.sessionID]?.replicas.removeAll { $0.holder == t.destination && $0.layers == t.layers }
            return [.log(.warning, "session \(t.sessionID): no replica of \(layers) on \(t.destination) (a failover will recompute): \(message)")]
        case .failover:
            guard sessions.entries[t.sessionID]?.install != nil else { return [] }
            resumed(t.sessionID)
            return [.log(.warning, "session \(t.sessionID): installing the replica of \(layers) on \(t.destination) failed (\(message)); recomputing"),
                    .recomputeSession(t.sessionID)]
        }
    }

    /// The holder keeps the full copy.
    private mutating func replicaAcked(_ t: SessionTable.Transfer, tokens: Int, wireBytes: UInt64) -> [CoordinatorAction] {
        guard var e = sessions.entries[t.sessionID],
              let k = e.replicas.firstIndex(where: { $0.holder == t.destination && $0.layers == t.layers }) else { return [] }
        e.replicas[k].tokens = tokens
        sessions.entries[t.sessionID] = e
        let c = e.replicas[k]
        return [.log(.info, "session \(t.sessionID): \(c.holder) keeps the replica of \(c.source)'s layers \(c.layers.lowerBound)..<\(c.layers.upperBound): \(tokens) tokens, \(wireBytes) bytes of \(settings.cacheKind)")]
    }

    // MARK: - Rebuilding after a failover

    /// The failover's plan serves: a paused session that generated `generatedTokens` so far
    /// resumes from its replicas (the holders are asked to install them; the acks decide)
    /// or, when it cannot, is recomputed at once.
    public mutating func rebuild(session id: UInt64, generatedTokens: Int, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard let e = sessions.entries[id], generatedTokens > 0,
              let moves = replicaInstall(copies: e.replicas, promptTokens: e.promptTokens) else {
            resumed(id)
            return [.recomputeSession(id)]
        }
        var actions: [CoordinatorAction] = []
        for move in moves {
            if let request = requestTransfer(session: id, from: move.holder, to: move.to, layers: move.layers, encoding: settings.cacheKind,
                                             mode: .install, purpose: .failover, now: now) { actions.append(request) }
        }
        guard actions.count == moves.count else {
            resumed(id)
            return [.recomputeSession(id)]
        }
        let install = SessionTable.Install(pending: actions.count, tokens: nil, fed: e.promptTokens + generatedTokens - 1,
                                           deadline: now + settings.stepTimeout)
        sessions.entries[id]?.install = install
        let how = moves.map { "\($0.holder) -> \($0.to) \($0.layers.lowerBound)..<\($0.layers.upperBound)" }.joined(separator: ", ")
        return actions + [.log(.info, "session \(id): installing replicas: \(how)")]
    }

    /// A replica is installed; once all are, the session goes on from the fewest tokens
    /// any of them holds.
    private mutating func replicaInstalled(_ t: SessionTable.Transfer, tokens: Int) -> [CoordinatorAction] {
        guard var install = sessions.entries[t.sessionID]?.install, install.pending > 0 else { return [] }
        install.pending -= 1
        install.tokens = min(install.tokens ?? tokens, tokens)
        guard install.pending == 0 else {
            sessions.entries[t.sessionID]?.install = install
            return []
        }
        let q = min(install.tokens ?? 0, install.fed)
        resumed(t.sessionID)
        return [.log(.info, "session \(t.sessionID): replicas installed; resuming at token \(q)"), .resumeSession(t.sessionID, atToken: q)]
    }

    /// A session leaves the failover (resumed or recomputed): no install is out for it
    /// any more, and it asks for replicas again on the new plan.
    private mutating func resumed(_ id: UInt64) {
        sessions.forgetTransfers { $0.sessionID == id && $0.purpose == .failover }
        sessions.entries[id]?.install = nil
        sessions.entries[id]?.replicas = []
        sessions.entries[id]?.replicated = false
    }

    /// A new death re-plans the replica installs in progress: they are forgotten (the
    /// sessions keep their copies for the next plan).
    mutating func cancelInstalls() {
        sessions.forgetTransfers { $0.purpose == .failover }
        for id in sessions.entries.keys { sessions.entries[id]?.install = nil }
    }

    /// The pipeline changed (a drain): every session asks for its replicas again at its next step.
    mutating func resetReplicas() {
        for id in sessions.entries.keys {
            sessions.entries[id]?.replicated = false
            sessions.entries[id]?.replicas = []
        }
    }

    /// Installs not acked within the step timeout: those sessions are recomputed.
    mutating func installTick(now: ContinuousClock.Instant) -> [CoordinatorAction] {
        var actions: [CoordinatorAction] = []
        for id in sessions.entries.keys.sorted() {
            guard let install = sessions.entries[id]?.install, install.pending > 0, install.deadline < now,
                  let late = sessions.transfers.filter({ $0.value.sessionID == id && $0.value.purpose == .failover }).keys.min()
            else { continue }
            actions += transferFailed(requestID: late, message: "not acknowledged within \(settings.stepTimeout)", now: now)
        }
        return actions
    }
}
