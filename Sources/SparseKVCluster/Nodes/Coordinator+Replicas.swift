import Foundation
import SparseKVEngine

// Kept KV replicas, the coordinator's side. At a session's first decode step on a plan,
// every pipeline worker is asked to send its KV for each of its segments to its replica
// holder (the next worker of the pipeline, wrapping around) and then to stream each
// decoded token's KV there (Worker+Replica.swift); the holder acks the full copy. When a
// worker dies and every live worker kept its caches, the holders install the dead
// worker's KV on whoever took its layers, and each session goes on from the replicas'
// last token: no recompute of the prompt. A session without a complete replica, or a
// plan that reloaded a live worker, rebuilds by recomputation (Coordinator+Failover.swift).

extension Coordinator {
    typealias ReplicaCopy = ReplicaInstallPlanner.Copy

    /// Whether sessions keep replicas: not turned off, one pipeline, and a cache whose
    /// append payloads a replica can take.
    var replicasEnabled: Bool {
        (configuration.replicas ?? 1) > 0 && configuration.prefillWorkers == 0
            && KVCacheFormats.supportsReplica(kind: cacheKind) && pipeline(0).count >= 2
    }

    /// Asks every pipeline worker for a replica of each of its segments.
    func startReplicas(_ sessionID: UInt64) {
        var copies: [ReplicaCopy] = []
        for i in pipeline(0) {
            guard let h = core.replicaHolder(of: i) else { continue }
            for segment in workers[i].segments {
                requestTransfer(session: sessionID, from: i, to: workers[h].id, layers: segment, encoding: cacheKind,
                                mode: .replica, purpose: .replica)
                copies.append(ReplicaCopy(source: workers[i].id, holder: workers[h].id, layers: segment))
            }
        }
        active[sessionID]?.replicas = copies
    }

    /// The holder keeps the full copy.
    func replicaAcknowledged(_ t: PendingTransfer, tokens: Int, wireBytes: UInt64) {
        guard var r = active[t.sessionID], let k = r.replicas.firstIndex(where: { $0.holder == t.destination && $0.layers == t.layers }) else { return }
        r.replicas[k].tokens = tokens
        active[t.sessionID] = r
        let c = r.replicas[k]
        logger.info("session \(t.sessionID): \(c.holder) keeps the replica of \(c.source)'s layers \(c.layers.lowerBound)..<\(c.layers.upperBound): \(tokens) tokens, \(wireBytes) bytes of \(cacheKind)")
    }

    func replicaFailed(_ t: PendingTransfer, message: String) {
        active[t.sessionID]?.replicas.removeAll { $0.holder == t.destination && $0.layers == t.layers }
        logger.warning("session \(t.sessionID): no replica of layers \(t.layers.lowerBound)..<\(t.layers.upperBound) on \(t.destination) (a failover will recompute): \(message)")
    }

    /// After a failover's new plan serves: asks the holders to install the dead workers'
    /// KV for the session. Returns false (nothing sent) when the session cannot resume from
    /// replicas and must be rebuilt.
    func installReplicas(_ sessionID: UInt64) -> Bool {
        guard let r = active[sessionID], r.session.prefillEnd != nil, !r.session.generated.isEmpty,
              let moves = core.replicaInstall(session: sessionID, copies: r.replicas, promptTokens: r.session.prompt.count)
        else { return false }
        for move in moves {
            guard let holder = index(ofWorker: move.holder) else { continue }
            requestTransfer(session: sessionID, from: holder, to: move.to, layers: move.layers, encoding: cacheKind,
                            mode: .install, purpose: .failover)
        }
        active[sessionID]?.pendingInstalls = moves.count
        active[sessionID]?.installedTokens = nil
        active[sessionID]?.deadline = .now + configuration.stepTimeout
        logger.info("session \(sessionID): installing replicas: \(moves.map { "\($0.holder) -> \($0.to) \($0.layers.lowerBound)..<\($0.layers.upperBound)" }.joined(separator: ", "))")
        return true
    }

    /// A replica is installed; once all are, the session goes on.
    func replicaInstalled(_ t: PendingTransfer, tokens: Int) {
        guard var r = active[t.sessionID], r.pendingInstalls > 0 else { return }
        r.pendingInstalls -= 1
        r.installedTokens = min(r.installedTokens ?? tokens, tokens)
        active[t.sessionID] = r
        guard r.pendingInstalls == 0 else { return }
        core.installsEnded(t.sessionID)
        for (id, p) in pendingTransfers where p.sessionID == t.sessionID && p.purpose == .failover { pendingTransfers[id] = nil }
        let s = r.session
        let q = min(r.installedTokens ?? 0, s.prompt.count + s.generated.count - 1)
        logger.info("session \(t.sessionID): replicas installed; resuming at token \(q)")
        resumeSession(t.sessionID) { try $0.resume(at: q, model: model) }
    }

    /// An install failed: the session is rebuilt by recomputation.
    func replicaInstallFailed(_ t: PendingTransfer, message: String) {
        guard active[t.sessionID] != nil else { return }
        for (id, p) in pendingTransfers where p.sessionID == t.sessionID && p.purpose == .failover { pendingTransfers[id] = nil }
        active[t.sessionID]?.pendingInstalls = 0
        active[t.sessionID]?.installedTokens = nil
        core.installsEnded(t.sessionID)
        logger.warning("session \(t.sessionID): installing the replica of layers \(t.layers.lowerBound)..<\(t.layers.upperBound) on \(t.destination) failed (\(message)); recomputing")
        resumeSession(t.sessionID) { try $0.restart(model: model) }
    }

    /// Installs not acked within the step timeout: those sessions recompute.
    func checkInstallDeadlines() {
        let now = ContinuousClock.now
        for (id, r) in active where r.pendingInstalls > 0 && r.deadline < now {
            guard let t = pendingTransfers.values.first(where: { $0.sessionID == id && $0.purpose == .failover }) else { continue }
            replicaInstallFailed(t, message: "not acknowledged within \(configuration.stepTimeout)")
        }
    }

    /// Measured streaming (`--replicate`, when no replicas are kept): asks every worker of the
    /// session's pipeline to stream its decoded tokens' KV to a peer, which checks and discards it.
    func startStreaming(_ sessionID: UInt64, pipeline p: Int) {
        let line = pipeline(p), other = pipeline(1 - p)
        for (position, i) in line.enumerated() {
            let target = other.count == line.count ? other[position] : line[(position + 1) % line.count]
            guard target != i, let layers = workers[i].layers else { continue }
            let id = nextControlID
            nextControlID += 1
            sendToWorker(i, WireMessage(.kvRequest(KVRequestBody(layers: layers, destination: workers[target].endpoint,
                                                                 encoding: cacheKind, mode: .stream)),
                                        requestID: id, sessionID: sessionID))
        }
    }
}
