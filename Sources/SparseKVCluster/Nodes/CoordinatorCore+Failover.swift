// Liveness and failover, the core's side. HeartbeatMonitor says whom to ping and who is
// dead; FailoverPlanner who takes a dead worker's layers; FailoverTracker whom to wait
// for, when to rebuild or give up; ReplicaInstallPlanner which kept replicas stand in for
// the dead workers' KV. A failover pauses every live session, sends the new assignments,
// waits until every pipeline worker reports its new layers, then has the loop rebuild
// each session (``rebuild(session:generatedTokens:now:)`` in CoordinatorCore+Sessions.swift
// decides: from replicas, or by replaying its tokens). A death during a failover
// re-plans from the plan in progress.

extension CoordinatorCore {
    // MARK: - Heartbeat

    /// Anything from a worker (on its main or its heartbeat socket) shows it alive.
    public mutating func heard(_ peer: String, now: ContinuousClock.Instant) {
        var id = peer
        if id.hasSuffix(WireProtocol.heartbeatSuffix) { id.removeLast(WireProtocol.heartbeatSuffix.count) }
        monitor.heard(id, now: now)
    }

    /// The workers being watched (alive as far as the core knows).
    public var watched: Set<String> { monitor.watched }

    /// The clock moved: pings due, workers silent for too long (failed over), and the
    /// deadlines of the drain, the failover, the replica installs and the sessions' steps.
    public mutating func tick(now: ContinuousClock.Instant) -> [CoordinatorAction] {
        var actions: [CoordinatorAction] = []
        for a in monitor.tick(now: now) {
            switch a {
            case .ping(let id, let nonce):
                actions.append(.ping(worker: id, nonce: nonce))
            case .lost(let id, let silence):
                let h = settings.heartbeat
                actions += workerLost(id, why: "nothing heard from it for \(Self.milliseconds(silence)) ms (liveness \(h.liveness) x \(Self.milliseconds(h.interval)) ms)", now: now)
            }
        }
        actions += drainTick(now: now)
        actions += installTick(now: now)
        actions += stepTick(now: now)
        if var tracker = recovery {
            let t = tracker.tick(now: now)
            recovery = tracker
            actions += carryOut(t, now: now)
        }
        return actions
    }

    // MARK: - Failover

    /// A worker is dead: plan who takes its layers and pause the sessions until the plan serves.
    public mutating func workerLost(_ id: String, why: String, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        monitor.remove(id)
        guard let x = index(ofWorker: id) else { return [] }
        let dead = workers[x]
        let held = dead.layers.map { "layers \($0.lowerBound)..<\($0.upperBound)" } ?? "no layers"
        var actions: [CoordinatorAction] = [.log(.error, "\(id) (\(held)) is dead: \(why)"), .disconnect(worker: id, linger: .zero)]
        guard phase != .registering, dead.layers != nil else {
            // A standby (or a worker before the plan): no layers to place, a drain goes on.
            workers.remove(at: x)
            return actions + [.log(.info, "\(id) held no layers; nothing to fail over")]
        }
        var reset = Set<String>()
        if let d = drain {
            // The drain cannot go on: its receivers go back to the coordinator's plan.
            drain = nil
            sessions.forgetTransfers { $0.purpose == .drain }
            if d.step != .waiting { reset.formUnion(d.newLayers.keys) }
            actions.append(.sendToClient(client: d.client, WireMessage(.error(ErrorBody(code: .unreachable, message: Self.clip(
                "the drain of \(d.request.workerID) was abandoned: \(id) died; its sessions go on after the failover"))), requestID: d.requestID)))
        }
        reset.remove(id)
        let line = dead.pipeline
        let members = pipeline(line).map { i in
            FailoverPlanner.Member(id: workers[i].id, layers: workers[i].layers, segments: workers[i].segments, budget: workers[i].budget)
        }
        let standbys = workers.filter { $0.pipeline == Self.standby }.map { FailoverPlanner.Member(id: $0.id, layers: nil, budget: $0.budget) }
        let planned = FailoverPlanner.plan(pipeline: members, standbys: standbys, dead: id, layerCount: settings.layerCount,
                                           bytesPerLayer: settings.bytesPerLayer, fixedBytes: settings.dictionaryBytes)
        // With a handoff both pipelines keep one layer split (KV moves one to one between
        // counterparts): only a standby taking the dead worker's very layers keeps it.
        if settings.prefillWorkers > 0, (try? planned.get())?.pipeline.map(\.layers) != members.map(\.layers) {
            workers.remove(at: x)
            return actions + giveUp("\(id) (\(held)) died: \(why); with --prefill-workers only a standby can take a dead worker's place (the prefill and decode pipelines keep one layer split); start one with enough memory")
        }
        let plan: FailoverPlanner.Plan
        switch planned {
        case .success(let p): plan = p
        case .failure(.noWorkers):
            workers.remove(at: x)
            return actions + giveUp("\(id) (\(held)) died (\(why)) and no live worker is left to take its layers; start workers and a new coordinator")
        case .failure(.insufficientMemory(let m)):
            workers.remove(at: x)
            return actions + giveUp("\(id) (\(held)) died (\(why)) and the live workers cannot hold its layers: \(m)")
        }
        // Handoffs in progress stop: their sessions are rebuilt with the others.
        sessions.forgetTransfers { $0.purpose == .handoff }
        for s in sessions.entries.keys { sessions.entries[s]?.handoffStarted = nil }
        // A new failover forgets the last one's dead, unless its replicas are still being installed.
        if recovery == nil, !sessions.entries.values.contains(where: { $0.install != nil }) {
            lostSegments = [:]
            failoverKeepsCaches = true
        }
        cancelInstalls()
        lostSegments[id] = dead.segments
        let before = Dictionary(uniqueKeysWithValues: workers.map { ($0.id, $0.layers) })
        workers.remove(at: x)
        apply(plan, pipeline: line)
        // A live worker whose range does not contain its old one reloads and drops its caches.
        for w in workers {
            guard let old = before[w.id] ?? nil else { continue }
            if !reset.isEmpty || !(w.layers.map { $0.lowerBound <= old.lowerBound && old.upperBound <= $0.upperBound } ?? true) {
                failoverKeepsCaches = false
            }
        }
        actions.append(.log(.warning, "failover of \(id): \(plan.how); pipeline now \(planDescription)"))
        var tracker = recovery ?? FailoverTracker(started: now, timeout: settings.stepTimeout)
        let t = tracker.workerLost(id, plan: plan, reset: Array(reset), now: now)
        recovery = tracker
        // The sessions' states in flight are lost with the dead worker: no step deadline
        // runs until they are rebuilt.
        for s in sessions.entries.keys { sessions.entries[s]?.stepDeadline = nil }
        return actions + [.pauseSessions] + carryOut(t, now: now)
    }

    /// Makes the plan's pipeline pipeline `p` in `workers` (in pipeline order, the other
    /// pipeline of a handoff unchanged), every other worker after them as a standby.
    private mutating func apply(_ plan: FailoverPlanner.Plan, pipeline p: Int) {
        var line: [Worker] = []
        for m in plan.pipeline {
            guard var w = workers.first(where: { $0.id == m.id }) else { continue }
            w.layers = m.layers
            w.segments = m.segments
            w.pipeline = p
            line.append(w)
        }
        let inPlan = Set(plan.pipeline.map(\.id))
        let other = workers.filter { !inPlan.contains($0.id) && $0.pipeline != p && $0.pipeline != Self.standby }
        let rest = workers.filter { w in !inPlan.contains(w.id) && !other.contains { $0.id == w.id } }.map { w -> Worker in
            var w = w
            w.layers = nil
            w.segments = []
            w.pipeline = Self.standby
            return w
        }
        workers = (p == 0 ? line + other : other + line) + rest
    }

    private mutating func carryOut(_ actions: [FailoverTracker.Action], now: ContinuousClock.Instant) -> [CoordinatorAction] {
        var out: [CoordinatorAction] = []
        for action in actions {
            switch action {
            case .assign(let id, _):
                guard let i = index(ofWorker: id), workers[i].layers != nil else { continue }
                workers[i].ready = false
                out.append(.send(worker: id, WireMessage(.shardAssignment(assignment(for: i)))))
            case .rebuildSessions:
                out += finishFailover(now: now)
            case .giveUp(let why):
                out += giveUp(why)
            }
        }
        return out
    }

    /// A worker reports layers during a failover: counted when they are its new ones.
    mutating func recoveryWorkerReady(_ i: Int, layers: Range<Int>, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard var tracker = recovery else { return [] }
        let id = workers[i].id
        guard workers[i].layers == layers else {
            return [.log(.info, "\(id) reported layers \(layers.lowerBound)..<\(layers.upperBound) of an earlier plan; waiting for its new ones")]
        }
        workers[i].ready = true
        let t = tracker.ready(id, layers: layers)
        recovery = tracker
        return [.log(.info, "\(id) serves layers \(layers.lowerBound)..<\(layers.upperBound) after the failover")] + carryOut(t, now: now)
    }

    /// Every pipeline worker serves its new layers: the sessions rebuild their KV (before
    /// the cluster serves, it may now be ready).
    private mutating func finishFailover(now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard let r = recovery else { return [] }
        recovery = nil
        let elapsed = Self.milliseconds(now - r.started)
        guard phase == .serving else {
            return [.log(.info, "failover of \(r.lost.joined(separator: ", ")) done in \(elapsed) ms, before serving")] + checkReady()
        }
        return [.rebuildSessions(lost: r.lost, milliseconds: elapsed)]
    }

    /// The cluster cannot serve any more: every session and waiting request fails with `why`.
    mutating func giveUp(_ why: String) -> [CoordinatorAction] {
        recovery = nil
        broken = why
        return [.log(.critical, "\(why)"), .giveUp(why)]
    }

    // MARK: - Replicas

    /// Who keeps worker i's replicas: the next worker of its pipeline, wrapping around.
    public func replicaHolder(of i: Int) -> Int? {
        let line = pipeline(workers[i].pipeline)
        guard line.count >= 2, let position = line.firstIndex(of: i) else { return nil }
        return line[(position + 1) % line.count]
    }

    /// After a failover's plan serves: the replica pieces to install for a session so it
    /// resumes without recompute, or nil when it must be rebuilt by recomputation (a live
    /// worker reloaded, a copy missing or short, its holder dead). The receivers' segments
    /// split to match the pieces (as the workers do).
    public mutating func replicaInstall(copies: [ReplicaInstallPlanner.Copy], promptTokens: Int) -> [ReplicaInstallPlanner.Move]? {
        guard failoverKeepsCaches else { return nil }
        let plan = pipeline(replicaPipeline).compactMap { i in workers[i].layers.map { (id: workers[i].id, layers: $0) } }
        guard let moves = ReplicaInstallPlanner.moves(lost: lostSegments, copies: copies, pipeline: plan,
                                                      alive: Set(workers.map(\.id)), promptTokens: promptTokens),
              moves.allSatisfy({ index(ofWorker: $0.holder) != nil && index(ofWorker: $0.to) != nil })
        else { return nil }
        for m in moves { if let to = index(ofWorker: m.to) { splitSegment(of: to, for: m.layers) } }
        return moves
    }

    /// A worker splits a segment no session holds yet when KV for a piece of it arrives
    /// (Worker.segmentForInstall); the plan follows, so later replicas name its segments.
    private mutating func splitSegment(of i: Int, for piece: Range<Int>) {
        guard !workers[i].segments.contains(piece),
              let k = workers[i].segments.firstIndex(where: { $0.lowerBound <= piece.lowerBound && piece.upperBound <= $0.upperBound })
        else { return }
        let whole = workers[i].segments[k]
        let pieces = [whole.lowerBound..<piece.lowerBound, piece, piece.upperBound..<whole.upperBound].filter { !$0.isEmpty }
        workers[i].segments.replaceSubrange(k...k, with: pieces)
    }
}
