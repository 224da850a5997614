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
    /// One kept copy of a worker's segment for a session.
    struct ReplicaCopy: Equatable {
        let source: String
        let holder: String
        let layers: Range<Int>
        /// Tokens of the full copy the holder acked (nil until acked).
        var tokens: Int?
    }

    /// Whether sessions keep replicas: not turned off, one pipeline, and a cache whose
    /// append payloads a replica can take.
    var replicasEnabled: Bool {
        (configuration.replicas ?? 1) > 0 && configuration.prefillWorkers == 0
            && [WireProtocol.csrEncoding, "fp32", "fp16"].contains(cacheKind) && pipeline(0).count >= 2
    }

    /// Who keeps worker i's replicas: the next worker of its pipeline, wrapping around.
    func replicaHolder(of i: Int) -> Int? {
        let line = pipeline(workers[i].pipeline)
        guard line.count >= 2, let position = line.firstIndex(of: i) else { return nil }
        return line[(position + 1) % line.count]
    }

    /// Asks every pipeline worker for a replica of each of its segments.
    func startReplicas(_ sessionID: UInt64) {
        var copies: [ReplicaCopy] = []
        for i in pipeline(0) {
            guard let h = replicaHolder(of: i) else { continue }
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
        guard failoverKeepsCaches, let r = active[sessionID], r.session.prefillEnd != nil, !r.session.generated.isEmpty else { return false }
        let lost = Set(lostSegments.keys)
        // Every lost segment must have an acked copy on a live holder.
        var moves: [(holder: Int, layers: Range<Int>, to: Int)] = []
        for (dead, segments) in lostSegments {
            for segment in segments {
                guard let copy = r.replicas.first(where: { $0.source == dead && $0.layers == segment }),
                      let tokens = copy.tokens, tokens >= r.session.prompt.count, !lost.contains(copy.holder),
                      let h = index(ofWorker: copy.holder)
                else { return false }
                // Whoever serves these layers now takes its piece.
                for w in pipeline(0) {
                    guard let layers = workers[w].layers else { continue }
                    let piece = segment.clamped(to: layers)
                    if !piece.isEmpty { moves.append((h, piece, w)) }
                }
                guard moves.filter({ $0.layers.overlaps(segment) }).reduce(0, { $0 + $1.layers.count }) == segment.count else { return false }
            }
        }
        guard !moves.isEmpty else { return false }
        for move in moves {
            splitSegment(of: move.to, for: move.layers)
            requestTransfer(session: sessionID, from: move.holder, to: workers[move.to].id, layers: move.layers, encoding: cacheKind,
                            mode: .install, purpose: .failover)
        }
        active[sessionID]?.pendingInstalls = moves.count
        active[sessionID]?.installedTokens = nil
        active[sessionID]?.deadline = .now + configuration.stepTimeout
        logger.info("session \(sessionID): installing replicas: \(moves.map { "\(workers[$0.holder].id) -> \(workers[$0.to].id) \($0.layers.lowerBound)..<\($0.layers.upperBound)" }.joined(separator: ", "))")
        return true
    }

    /// A worker splits a segment no session holds yet when KV for a piece of it arrives
    /// (Worker.segmentForInstall); the plan follows, so later replicas name its segments.
    private func splitSegment(of i: Int, for piece: Range<Int>) {
        guard !workers[i].segments.contains(piece),
              let k = workers[i].segments.firstIndex(where: { $0.lowerBound <= piece.lowerBound && piece.upperBound <= $0.upperBound })
        else { return }
        let whole = workers[i].segments[k]
        let pieces = [whole.lowerBound..<piece.lowerBound, piece, piece.upperBound..<whole.upperBound].filter { !$0.isEmpty }
        workers[i].segments.replaceSubrange(k...k, with: pieces)
    }

    /// A replica is installed; once all are, the session goes on.
    func replicaInstalled(_ t: PendingTransfer, tokens: Int) {
        guard var r = active[t.sessionID], r.pendingInstalls > 0 else { return }
        r.pendingInstalls -= 1
        r.installedTokens = min(r.installedTokens ?? tokens, tokens)
        active[t.sessionID] = r
        guard r.pendingInstalls == 0 else { return }
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
}
