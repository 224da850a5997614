import Foundation
import SparseKVEngine

// Liveness and failover. The decisions are taken by I/O-free types (HeartbeatMonitor:
// whom to ping, who is dead; FailoverPlanner: who takes a dead worker's layers;
// FailoverTracker: whom to wait for, when to rebuild or give up); this file carries them out. A failover pauses every live session (their KV on the dead
// worker is gone), sends the new assignments, waits until every pipeline worker reports
// its new layers, then rebuilds each session's KV by replaying its prompt and generated
// tokens exactly as the first time (GenerationSession.restart), so the tokens that follow
// are the ones an uninterrupted run gives. A death during a failover re-plans from the
// plan in progress.

extension Coordinator {
    // MARK: - Heartbeat

    /// Anything from a worker (on its main or its heartbeat socket) shows it alive.
    func noteHeard(_ received: ReceivedMessage) {
        var id = received.peer
        if id.hasSuffix(WireProtocol.heartbeatSuffix) { id.removeLast(WireProtocol.heartbeatSuffix.count) }
        monitor.heard(id, now: .now)
    }

    /// Sends the pings due and fails over the workers silent for too long.
    func heartbeatTick() {
        for action in monitor.tick(now: .now) {
            switch action {
            case .ping(let id, let nonce):
                // A heartbeat socket not connected yet (a worker still starting) is skipped:
                // its silence counts from its registration.
                do {
                    try router.send(WireMessage(.ping(nonce: nonce)), to: WireProtocol.heartbeatRoutingID(worker: id), timeout: .zero)
                } catch {
                    logger.debug("ping to \(id): \(error.localizedDescription)")
                }
            case .lost(let id, let silence):
                workerLost(id, why: "nothing heard from it for \(milliseconds(silence)) ms (liveness \(configuration.heartbeat.liveness) x \(milliseconds(configuration.heartbeat.interval)) ms)")
            }
        }
    }

    // MARK: - Failover

    /// A worker is dead: plan who takes its layers and start rebuilding the sessions.
    func workerLost(_ id: String, why: String) {
        monitor.remove(id)
        guard let x = index(ofWorker: id) else { return }
        let dead = workers[x]
        let held = dead.layers.map { "layers \($0.lowerBound)..<\($0.upperBound)" } ?? "no layers"
        logger.error("\(id) (\(held)) is dead: \(why)")
        dead.link?.close(linger: .zero)
        var reset = Set<String>()
        if let d = drain {
            // The drain cannot go on: its receivers go back to the coordinator's plan.
            drain = nil
            pendingTransfers = pendingTransfers.filter { $0.value.purpose != .drain }
            if d.step != .waiting { reset.formUnion(d.newLayers.keys) }
            sendToClient(d.client, WireMessage(.error(ErrorBody(code: .unreachable, message: clip(
                "the drain of \(d.request.workerID) was abandoned: \(id) died; its sessions go on after the failover"))), requestID: d.requestID))
        }
        reset.remove(id)
        guard phase != .registering, dead.layers != nil else {
            workers.remove(at: x)
            logger.info("\(id) held no layers; nothing to fail over")
            return
        }
        guard configuration.prefillWorkers == 0 else {
            workers.remove(at: x)
            return giveUp("\(id) (\(held)) died: \(why); failover is not supported with --prefill-workers")
        }
        let members = pipeline(0).map { i in
            FailoverPlanner.Member(id: workers[i].id, layers: workers[i].layers, segments: workers[i].segments, budget: workers[i].budget)
        }
        let standbys = workers.filter { $0.pipeline == Self.standby }.map {
            FailoverPlanner.Member(id: $0.id, layers: nil, budget: $0.budget)
        }
        let plan: FailoverPlanner.Plan
        switch FailoverPlanner.plan(pipeline: members, standbys: standbys, dead: id, layerCount: model.config.layerCount,
                                    bytesPerLayer: bytesPerLayer, fixedBytes: UInt64(dictionary?.gguf.count ?? 0)) {
        case .success(let p): plan = p
        case .failure(.noWorkers):
            workers.remove(at: x)
            return giveUp("\(id) (\(held)) died (\(why)) and no live worker is left to take its layers; start workers and a new coordinator")
        case .failure(.insufficientMemory(let m)):
            workers.remove(at: x)
            return giveUp("\(id) (\(held)) died (\(why)) and the live workers cannot hold its layers: \(m)")
        }
        // A new failover forgets the last one's dead, unless its replicas are still being installed.
        if recovery == nil, !active.values.contains(where: { $0.pendingInstalls > 0 }) {
            lostSegments = [:]
            failoverKeepsCaches = true
        }
        for (rid, t) in pendingTransfers where t.purpose == .failover { pendingTransfers[rid] = nil }
        for sid in active.keys {
            active[sid]?.pendingInstalls = 0
            active[sid]?.installedTokens = nil
        }
        lostSegments[id] = dead.segments
        let before = Dictionary(uniqueKeysWithValues: workers.map { ($0.id, $0.layers) })
        workers.remove(at: x)
        apply(plan)
        // A live worker whose range does not contain its old one reloads and drops its caches.
        for w in workers {
            guard let old = before[w.id] ?? nil else { continue }
            if !reset.isEmpty || !(w.layers.map { $0.lowerBound <= old.lowerBound && old.upperBound <= $0.upperBound } ?? true) {
                failoverKeepsCaches = false
            }
        }
        logger.warning("failover of \(id): \(plan.how); pipeline now \(workers.filter { $0.layers != nil }.map { "\($0.id) \($0.layers!.lowerBound)..<\($0.layers!.upperBound)" }.joined(separator: ", "))")
        let now = ContinuousClock.now
        var tracker = recovery ?? FailoverTracker(started: now, timeout: configuration.stepTimeout)
        let actions = tracker.workerLost(id, plan: plan, reset: Array(reset), now: now)
        recovery = tracker
        for sid in active.keys {
            active[sid]?.recovering = true
            active[sid]?.parked = nil
            active[sid]?.inFlight = false
            if active[sid]?.pausedSince == nil { active[sid]?.pausedSince = now }
            if active[sid]?.stalledSince == nil { active[sid]?.stalledSince = active[sid]?.lastStep }
        }
        carryOut(actions)
    }

    /// Does what the failover tracker decided.
    private func carryOut(_ actions: [FailoverTracker.Action]) {
        for action in actions {
            switch action {
            case .assign(let id, _):
                guard let i = index(ofWorker: id), workers[i].layers != nil else { continue }
                workers[i].ready = false
                sendToWorker(i, WireMessage(.shardAssignment(assignment(for: i))))
            case .rebuildSessions:
                finishFailover()
            case .giveUp(let why):
                giveUp(why)
            }
        }
    }

    /// Puts the plan's pipeline first in `workers` (pipeline order), everyone else after
    /// as standbys.
    private func apply(_ plan: FailoverPlanner.Plan) {
        var line: [WorkerState] = []
        for m in plan.pipeline {
            guard var w = workers.first(where: { $0.id == m.id }) else { continue }
            w.layers = m.layers
            w.segments = m.segments
            w.pipeline = 0
            line.append(w)
        }
        let rest = workers.filter { w in !plan.pipeline.contains { $0.id == w.id } }.map { w -> WorkerState in
            var w = w
            w.layers = nil
            w.segments = []
            w.pipeline = Self.standby
            return w
        }
        workers = line + rest
    }

    /// A worker reports layers during a failover: counted when they are its new ones.
    func recoveryWorkerReady(_ i: Int, layers: Range<Int>) {
        guard var tracker = recovery else { return }
        let id = workers[i].id
        guard workers[i].layers == layers else {
            logger.info("\(id) reported layers \(layers.lowerBound)..<\(layers.upperBound) of an earlier plan; waiting for its new ones")
            return
        }
        workers[i].ready = true
        logger.info("\(id) serves layers \(layers.lowerBound)..<\(layers.upperBound) after the failover")
        let actions = tracker.ready(id, layers: layers)
        recovery = tracker
        carryOut(actions)
    }

    /// Every pipeline worker serves its new layers: the sessions rebuild their KV.
    private func finishFailover() {
        guard let r = recovery else { return }
        recovery = nil
        let elapsed = milliseconds(.now - r.started)
        guard phase == .serving else {
            logger.info("failover of \(r.lost.joined(separator: ", ")) done in \(elapsed) ms, before serving")
            return checkReady()
        }
        let sessions = active.keys.sorted().filter { active[$0]?.recovering == true }
        logger.warning("failover of \(r.lost.joined(separator: ", ")) done in \(elapsed) ms; rebuilding \(sessions.count) session(s) on the new plan")
        for id in sessions where !installReplicas(id) {
            resumeSession(id) { try $0.restart(model: model) }
        }
        startWaiting()
    }

    /// Puts a paused session back on the pipeline with `action` (a rebuild or a resume from
    /// replicas), under a new request id; its replicas are requested again on the new plan.
    func resumeSession(_ id: UInt64, _ action: (inout GenerationSession) throws -> GenerationSession.Action) {
        guard var q = active[id] else { return }
        q.recovering = false
        q.wireID = takeControlID()
        q.recoveryStarted = .now
        q.replicated = false
        q.replicas = []
        do {
            let next = try action(&q.session)
            active[id] = q
            try perform(next, sessionID: id)
        } catch {
            active[id] = q
            fail(id, code: .internalError, message: "could not rebuild the session after the failover: \(error.localizedDescription)")
        }
    }

    /// A session's replay reached the token where it stopped: it generates again.
    func sessionRecovered(_ id: UInt64) {
        guard let r = active[id], let started = r.recoveryStarted, !r.session.isReplaying else { return }
        active[id]?.recoveryStarted = nil
        active[id]?.stalledSince = nil
        let replay = milliseconds(.now - started)
        let pause = r.stalledSince.map { milliseconds(.now - $0) } ?? replay
        if let q = r.installedTokens {
            let fed = r.session.prompt.count + r.session.generated.count - 1 - q
            logger.warning("session \(id) generates again: resumed from replicas at token \(q), \(fed) token(s) fed again in \(replay) ms, no prompt recompute; paused \(pause) ms since the last token before the death")
        } else {
            logger.warning("session \(id) generates again: \(r.session.prompt.count) prompt and \(r.session.generated.count) generated tokens recomputed in \(replay) ms; paused \(pause) ms since the last token before the death")
        }
    }

    func checkRecoveryDeadline() {
        checkInstallDeadlines()
        guard var tracker = recovery else { return }
        let actions = tracker.tick(now: .now)
        recovery = tracker
        carryOut(actions)
    }

    /// The cluster cannot serve any more: every session and waiting request fails with
    /// `why`, and so does every later request.
    func giveUp(_ why: String) {
        recovery = nil
        broken = why
        logger.critical("\(why)")
        for id in active.keys.sorted() { fail(id, code: .unreachable, message: why) }
        failWaiting(why)
    }

    func milliseconds(_ d: Duration) -> UInt64 { nanoseconds(d) / 1_000_000 }
}
