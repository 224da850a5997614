import Testing
@testable import SparseKVCluster

/// The coordinator's decisions (registration, plan, liveness, drain, failover) driven
/// through their transitions with no process and no socket: events in, actions out, time
/// from a fake clock (instants built from one origin).
@Suite struct CoordinatorCoreTests {
    let t0 = ContinuousClock.now
    /// Every worker's peer endpoint, a port each, so next hops can be told apart.
    let endpoints: [String: Endpoint]
    let elsewhere: Endpoint

    init() throws {
        var e: [String: Endpoint] = [:]
        for (k, id) in ["w1", "w2", "w3", "w4", "s1"].enumerated() { e[id] = try Endpoint(parsing: "tcp://127.0.0.1:\(6001 + k)") }
        endpoints = e
        elsewhere = try Endpoint(parsing: "tcp://127.0.0.1:6000")
    }

    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    /// 30 layers of 10 bytes each, a csr cache with a dictionary, pings every 100 ms and
    /// death after 3 silent intervals.
    func core(workers: Int = 3) -> CoordinatorCore {
        var s = CoordinatorCore.Settings(workerCount: workers, layerCount: 30, bytesPerLayer: 10, modelFingerprint: "fp",
                                         kvSpec: "csr:8", cacheKind: "csr", contextLength: 64)
        s.dictionaryHash = "d1"
        s.heartbeat = HeartbeatMonitor.Settings(interval: .milliseconds(100), liveness: 3)
        s.stepTimeout = .seconds(10)
        return CoordinatorCore(settings: s)
    }

    func endpoint(_ id: String) -> Endpoint { endpoints[id] ?? elsewhere }

    func register(_ c: inout CoordinatorCore, _ id: String, budget: UInt64 = 1_000, fingerprint: String = "fp", at ms: Int = 0) -> [CoordinatorAction] {
        c.register(RegisterBody(workerID: id, peerEndpoint: endpoint(id), memoryBudgetBytes: budget, modelFingerprint: fingerprint),
                   peer: id, routingID: Array(id.utf8), now: at(ms))
    }

    /// Layers and next hop of every assignment in `actions`, by worker.
    func assignments(_ actions: [CoordinatorAction]) -> [String: ShardAssignmentBody] {
        var out: [String: ShardAssignmentBody] = [:]
        for case .send(let w, let m) in actions {
            if case .shardAssignment(let a) = m.body { out[w] = a }
        }
        return out
    }

    func layers(_ c: CoordinatorCore) -> [String: Range<Int>] {
        Dictionary(uniqueKeysWithValues: c.workers.compactMap { w in w.layers.map { (w.id, $0) } })
    }

    func errors(_ actions: [CoordinatorAction]) -> [ErrorBody] {
        actions.compactMap { if case .answer(.error(let e)) = $0 { return e } else { return nil } }
    }

    /// The kvRequests among `actions`: sender, session, request id and body.
    func kvRequests(_ actions: [CoordinatorAction]) -> [(from: String, session: UInt64, id: UInt64, body: KVRequestBody)] {
        actions.compactMap {
            if case .send(let w, let m) = $0, case .kvRequest(let b) = m.body { return (w, m.sessionID, m.requestID, b) } else { return nil }
        }
    }

    /// A cluster of `ids` (equal budgets) serving, plus `standbys` registered and acked.
    func serving(_ ids: [String] = ["w1", "w2", "w3"], standbys: [String] = []) -> CoordinatorCore {
        var c = core(workers: ids.count)
        for id in ids { _ = register(&c, id) }
        for w in c.workers {
            _ = c.shardReady(w.id, layers: w.layers!, weightBytes: 1, now: at(0))
            _ = c.dictionaryAck(w.id, hash: "d1", requestID: 0)
        }
        for id in standbys {
            _ = register(&c, id)
            _ = c.dictionaryAck(id, hash: "d1", requestID: 0)
        }
        return c
    }

    // MARK: - Registration and plan

    @Test func theLastOfNWorkersTriggersThePlanAndALateOneStandsBy() {
        var c = core()
        #expect(register(&c, "w1").first == .answer(.registerAck(workerIndex: 0)))
        #expect(assignments(register(&c, "w2")).isEmpty, "no plan before the third worker")
        let planned = register(&c, "w3")
        #expect(c.phase == .starting)
        #expect(planned.filter { if case .connect = $0 { return true } else { return false } }
                == [.connect(worker: "w1"), .connect(worker: "w2"), .connect(worker: "w3")])
        let a = assignments(planned)
        #expect(a.mapValues(\.layers) == ["w1": 0..<10, "w2": 10..<20, "w3": 20..<30])
        #expect(a["w1"]?.nextHop == .peer(endpoint("w2")) && a["w2"]?.nextHop == .peer(endpoint("w3")) && a["w3"]?.nextHop == .coordinator)
        #expect(a["w1"]?.dictionaryHash == "d1" && a["w1"]?.kvSpec == "csr:8" && a["w1"]?.contextCapacity == 64)
        #expect(planned.filter { $0 == .sendDictionary(worker: "w2") }.count == 1)
        #expect(errors(register(&c, "w4")).map(\.code) == [.unexpectedMessage], "no registration while the plan loads")

        // Ready only once every worker loaded its layers and acked the dictionary.
        for id in ["w1", "w2", "w3"] { #expect(!c.shardReady(id, layers: layers(c)[id]!, weightBytes: 1, now: at(0)).contains(.serving)) }
        #expect(!c.dictionaryAck("w1", hash: "d1", requestID: 0).contains(.serving))
        let wrong = c.dictionaryAck("w2", hash: "other", requestID: 7)
        #expect(wrong.contains { if case .send("w2", let m) = $0, case .error(let e) = m.body { return e.code == .dictionaryMismatch && m.requestID == 7 } else { return false } })
        #expect(!c.dictionaryAck("w3", hash: "d1", requestID: 0).contains(.serving), "w2's ack was refused")
        #expect(c.dictionaryAck("w2", hash: "d1", requestID: 0).contains(.serving))
        #expect(c.phase == .serving)

        let late = register(&c, "s1")
        #expect(late == [.answer(.registerAck(workerIndex: 3)), .connectStandby(worker: "s1"),
                         .log(.info, "registered s1 at \(endpoint("s1")) as a standby (no layers)"), .sendDictionary(worker: "s1")])
        #expect(c.workers.last?.pipeline == CoordinatorCore.standby && c.workers.last?.layers == nil)
        #expect(layers(c) == ["w1": 0..<10, "w2": 10..<20, "w3": 20..<30], "a standby changes no one's layers")
    }

    @Test func registrationsThatCannotJoinAreRefusedWithAReason() {
        var c = core()
        _ = register(&c, "w1")
        #expect(errors(register(&c, "w1")).first?.message.contains("already registered") == true)
        #expect(errors(register(&c, "w2", fingerprint: "other")).map(\.code) == [.modelMismatch])
        #expect(errors(c.register(RegisterBody(workerID: "w2", peerEndpoint: endpoint("w2"), memoryBudgetBytes: 1_000, modelFingerprint: "fp"),
                                  peer: "impostor", routingID: Array("impostor".utf8), now: at(0))).map(\.code) == [.malformedMessage])
        #expect(c.workers.map(\.id) == ["w1"])
    }

    @Test func budgetsTooSmallForThePlanStopTheStartAndTellEveryWorker() {
        var c = core(workers: 2)
        _ = register(&c, "w1", budget: 100)
        let actions = register(&c, "w2", budget: 100)
        #expect(actions.filter { if case .send(_, let m) = $0, case .error(let e) = m.body { return e.code == .outOfMemory } else { return false } }.count == 2)
        guard case .abort(.insufficientMemory(let why))? = actions.last else { Issue.record("no abort: \(actions)"); return }
        #expect(why.contains("w1") && why.contains("needs 150 bytes"))
        #expect(c.phase == .registering)
    }

    @Test func aReportOfOtherLayersThanAssignedStopsTheStart() {
        var c = core(workers: 1)
        _ = register(&c, "w1")
        #expect(c.shardReady("w1", layers: 0..<29, weightBytes: 1, now: at(0))
                == [.abort(.refused(by: "w1", code: .layerMismatch, message: "reported layers 0..<29, assigned Optional(Range(0..<30))"))])
    }

    // MARK: - Liveness

    @Test func aWorkerSilentPastThePongDeadlineIsFailedOver() {
        var c = serving()
        var pings: [String: Int] = [:]
        var lostAt: Int?
        for ms in stride(from: 0, through: 600, by: 50) {
            // w1 and w3 answer every ping; w2 never does.
            let actions = c.tick(now: at(ms))
            for case .ping(let w, _) in actions { pings[w, default: 0] += 1 }
            if lostAt == nil, actions.contains(.pauseSessions) { lostAt = ms }
            c.heard("w1", now: at(ms))
            c.heard("w3" + WireProtocol.heartbeatSuffix, now: at(ms))
        }
        #expect(lostAt == 350, "dead after 3 x 100 ms of silence, at the first tick past it")
        #expect(pings["w1"] == 7 && pings["w3"] == 7, "a ping every 100 ms")
        #expect(pings["w2"] == 4, "w2 is not pinged after it is declared dead")
        #expect(c.watched == ["w1", "w3"])
        #expect(layers(c) == ["w1": 0..<15, "w3": 15..<30])
        #expect(c.recovery?.lost == ["w2"])
    }

    // MARK: - Failover

    @Test func aDeathMovesTheLayersToTheStandbyWhichGetsTheReplica() throws {
        var c = serving(standbys: ["s1"])
        let actions = c.workerLost("w2", why: "killed", now: at(0))
        #expect(actions.contains(.disconnect(worker: "w2", linger: .zero)))
        #expect(actions.contains(.pauseSessions))
        let a = assignments(actions)
        #expect(a.mapValues(\.layers) == ["w1": 0..<10, "s1": 10..<20])
        #expect(a["w1"]?.nextHop == .peer(endpoint("s1")) && a["s1"]?.nextHop == .peer(endpoint("w3")))
        #expect(c.workers.map(\.id) == ["w1", "s1", "w3"])
        #expect(c.recovery?.awaits("w3") == false && c.recovery?.awaits("s1") == true)
        #expect(c.shardReady("w3", layers: 20..<30, weightBytes: 1, now: at(10)) == [.log(.info, "w3 serves layers 20..<30 after the failover")],
                "w3 is not waited for")
        #expect(!c.shardReady("s1", layers: 10..<20, weightBytes: 1, now: at(20)).contains { if case .rebuildSessions = $0 { return true } else { return false } })
        let done = c.shardReady("w1", layers: 0..<10, weightBytes: 1, now: at(30))
        #expect(done.last == .rebuildSessions(lost: ["w2"], milliseconds: 30))
        #expect(c.recovery == nil)

        // w2's replica lives on w3 (the next worker): w3 sends it to s1.
        let copies = [ReplicaInstallPlanner.Copy(source: "w1", holder: "w2", layers: 0..<10, tokens: 12),
                      ReplicaInstallPlanner.Copy(source: "w2", holder: "w3", layers: 10..<20, tokens: 12),
                      ReplicaInstallPlanner.Copy(source: "w3", holder: "w1", layers: 20..<30, tokens: 12)]
        #expect(c.replicaInstall(copies: copies, promptTokens: 8)
                == [ReplicaInstallPlanner.Move(holder: "w3", layers: 10..<20, to: "s1")])
        // A replica holder is the next worker of the new pipeline.
        #expect(c.replicaHolder(of: 1).map { c.workers[$0].id } == "w3" && c.replicaHolder(of: 2).map { c.workers[$0].id } == "w1")
    }

    @Test func neighboursTakeTheLayersAndTheReplicaSplitsBetweenThem() {
        var c = serving()
        _ = c.workerLost("w2", why: "killed", now: at(0))
        _ = c.shardReady("w1", layers: 0..<15, weightBytes: 1, now: at(5))
        #expect(c.shardReady("w3", layers: 15..<30, weightBytes: 1, now: at(5)).last == .rebuildSessions(lost: ["w2"], milliseconds: 5))
        let copies = [ReplicaInstallPlanner.Copy(source: "w2", holder: "w3", layers: 10..<20, tokens: 9)]
        #expect(c.replicaInstall(copies: copies, promptTokens: 8)
                == [ReplicaInstallPlanner.Move(holder: "w3", layers: 10..<15, to: "w1"), ReplicaInstallPlanner.Move(holder: "w3", layers: 15..<20, to: "w3")])
        #expect(c.workers.first { $0.id == "w3" }?.segments == [15..<20, 20..<30], "the plan's segments name the pieces the replica fills")
    }

    @Test func withoutAnAckedReplicaTheSessionIsRecomputed() {
        var c = serving(standbys: ["s1"])
        _ = c.workerLost("w2", why: "killed", now: at(0))
        _ = c.shardReady("s1", layers: 10..<20, weightBytes: 1, now: at(1))
        _ = c.shardReady("w1", layers: 0..<10, weightBytes: 1, now: at(1))
        #expect(c.replicaInstall(copies: [], promptTokens: 8) == nil, "no copy of w2's layers")
        #expect(c.replicaInstall(copies: [ReplicaInstallPlanner.Copy(source: "w2", holder: "w3", layers: 10..<20)], promptTokens: 8) == nil,
                "a copy never acked")
        #expect(c.replicaInstall(copies: [ReplicaInstallPlanner.Copy(source: "w2", holder: "w3", layers: 10..<20, tokens: 5)], promptTokens: 8) == nil,
                "a copy shorter than the prompt")
    }

    @Test func aSecondDeathDuringTheRecoveryRePlansOnTheSurvivorsWithoutDoubleAssignment() {
        var c = serving(standbys: ["s1"])
        _ = c.workerLost("w2", why: "killed", now: at(0))
        _ = c.shardReady("w1", layers: 0..<10, weightBytes: 1, now: at(10))
        // The standby dies while loading w2's layers: w1 and w3 extend over them.
        let second = c.workerLost("s1", why: "killed too", now: at(20))
        #expect(second.contains(.pauseSessions))
        #expect(assignments(second).mapValues(\.layers) == ["w1": 0..<15, "w3": 15..<30])
        #expect(layers(c) == ["w1": 0..<15, "w3": 15..<30], "every layer has exactly one holder")
        #expect(c.shardReady("w1", layers: 0..<10, weightBytes: 1, now: at(30)) == [.log(.info, "w1 reported layers 0..<10 of an earlier plan; waiting for its new ones")])
        _ = c.shardReady("w1", layers: 0..<15, weightBytes: 1, now: at(40))
        #expect(c.shardReady("w3", layers: 15..<30, weightBytes: 1, now: at(50)).last == .rebuildSessions(lost: ["w2", "s1"], milliseconds: 50))
        // s1 never held KV, and w2's replica (on w3) alone cannot stand for both deaths.
        let copies = [ReplicaInstallPlanner.Copy(source: "w2", holder: "w3", layers: 10..<20, tokens: 12)]
        #expect(c.replicaInstall(copies: copies, promptTokens: 8) == nil)
    }

    @Test func aDeathThatLeavesNoWorkerFailsEverySessionWithTheReason() {
        var c = serving(["w1", "w2"])
        _ = c.workerLost("w1", why: "killed", now: at(0))
        #expect(layers(c) == ["w2": 0..<30])
        let last = c.workerLost("w2", why: "killed", now: at(10))
        let why = "w2 (layers 0..<30) died (killed) and no live worker is left to take its layers; start workers and a new coordinator"
        #expect(last.suffix(2) == [.log(.critical, why), .giveUp(why)])
        #expect(c.broken == why && c.recovery == nil)
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "w2"), client: [1], requestID: 1)).first?.message == why)
    }

    /// Ticks every 100 ms from `from` to `to` (inclusive), every live worker answering.
    func keepAlive(_ c: inout CoordinatorCore, from: Int, to: Int) -> [CoordinatorAction] {
        var out: [CoordinatorAction] = []
        for ms in stride(from: from, through: to, by: 100) {
            for id in c.watched { c.heard(id, now: at(ms)) }
            out += c.tick(now: at(ms))
        }
        return out
    }

    @Test func aFailoverThatOutlastsTheStepTimeoutGivesUp() {
        var c = serving(standbys: ["s1"])
        _ = c.workerLost("w2", why: "killed", now: at(0))
        #expect(!keepAlive(&c, from: 0, to: 10_000).contains { if case .giveUp = $0 { return true } else { return false } })
        for id in c.watched { c.heard(id, now: at(10_050)) }
        let late = c.tick(now: at(10_050))
        #expect(late.contains(.giveUp("the failover of w2 did not finish within 10.0 seconds: no report from s1, w1")))
    }

    // MARK: - Prefill -> decode handoff

    @Test func withAHandoffBothPipelinesShareOneSplitAndKVMovesToTheCounterpart() {
        var settings = core(workers: 4).settings
        settings.prefillWorkers = 2
        var c = CoordinatorCore(settings: settings)
        for id in ["w1", "w2", "w3", "w4"] { _ = register(&c, id, budget: id == "w3" ? 150 : 1_000) }
        // Planned on the smaller budget of each (prefill, decode) pair: 150 against 1,000.
        #expect(layers(c) == ["w1": 0..<5, "w3": 0..<5, "w2": 5..<30, "w4": 5..<30])
        #expect(c.workers.map(\.pipeline) == [0, 0, 1, 1])
        #expect(c.handoffMoves == [CoordinatorCore.HandoffMove(from: "w1", to: "w3", layers: 0..<5),
                                   CoordinatorCore.HandoffMove(from: "w2", to: "w4", layers: 5..<30)])
        #expect(c.handsOff(pipeline: 0, phase: .decode) && !c.handsOff(pipeline: 0, phase: .prefill) && !c.handsOff(pipeline: 1, phase: .decode))
        for w in c.workers {
            _ = c.shardReady(w.id, layers: w.layers!, weightBytes: 1, now: at(0))
            _ = c.dictionaryAck(w.id, hash: "d1", requestID: 0)
        }
        #expect(c.phase == .serving)
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "w2"), client: [9], requestID: 1)).first?.message.hasPrefix("drain is not supported with --prefill-workers") == true)
        let lost = c.workerLost("w4", why: "killed", now: at(1))
        #expect(lost.last == .giveUp("w4 (layers 5..<30) died: killed; with --prefill-workers only a standby can take a dead worker's place (the prefill and decode pipelines keep one layer split); start one with enough memory"))
    }

    // MARK: - Drain

    @Test func aStandbyRegisteringDuringADrainStaysOutOfItAndTakesALaterDeath() {
        var c = serving()
        let client: [UInt8] = [9]
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "w2"), client: client, requestID: 5)).isEmpty)
        #expect(c.drainHolds(generated: 0))
        let loading = c.sessionsParked([1], now: at(0))
        #expect(assignments(loading).mapValues(\.layers) == ["w1": 0..<15, "w3": 15..<30])
        #expect(assignments(loading)["w1"]?.nextHop == .peer(endpoint("w3")), "w1's next hop skips the drained worker")

        let late = register(&c, "s1", at: 5)
        #expect(late.first == .answer(.registerAck(workerIndex: 3)) && late.contains(.connectStandby(worker: "s1")))
        #expect(assignments(late).isEmpty)
        #expect(c.drain?.step == .loading(["w1", "w3"]), "the drain goes on as it was")

        _ = c.shardReady("w1", layers: 0..<15, weightBytes: 1, now: at(10))
        let wave = c.shardReady("w3", layers: 15..<30, weightBytes: 1, now: at(10))
        #expect(kvRequests(wave).map(\.from) == ["w2", "w2"] && kvRequests(wave).map(\.session) == [1, 1])
        #expect(kvRequests(wave).map(\.body) == [KVRequestBody(layers: 10..<15, destination: endpoint("w1"), encoding: "csr", mode: .install),
                                                  KVRequestBody(layers: 15..<20, destination: endpoint("w3"), encoding: "csr", mode: .install)])
        func ack(_ to: String, _ l: Range<Int>) -> DrainReplyBody.Transfer {
            DrainReplyBody.Transfer(sessionID: 1, layers: l, destination: to, encoding: "csr", mode: .install, tokenCount: 9,
                                    payloadBytes: 100, wireBytes: 120, nanoseconds: 1)
        }
        #expect(c.drainTransferAcked(ack("w1", 10..<15), now: at(20)).isEmpty)
        let done = c.drainTransferAcked(ack("w3", 15..<20), now: at(30))
        #expect(done.first == .send(worker: "w2", WireMessage(.shutdown(reason: "drained: layers 10..<20 moved to w1, w3"))))
        #expect(done.contains(.sendToClient(client: client, WireMessage(.drainReply(DrainReplyBody(
            workerID: "w2", layers: 10..<20, nanoseconds: 30_000_000, sessionCount: 1, transfers: [ack("w1", 10..<15), ack("w3", 15..<20)])), requestID: 5))))
        #expect(done.last == .resumeParked)
        #expect(c.drain == nil && !c.drainHolds(generated: 0))
        #expect(c.workers.map(\.id) == ["w1", "w3", "s1"] && layers(c) == ["w1": 0..<15, "w3": 15..<30])
        #expect(c.workers[0].segments == [0..<10, 10..<15] && c.workers[1].segments == [15..<20, 20..<30])

        // The standby is still there for the next death.
        #expect(assignments(c.workerLost("w3", why: "killed", now: at(40))).mapValues(\.layers) == ["w1": 0..<15, "s1": 15..<30])
    }

    @Test func aStandbyDyingDuringADrainDoesNotStopIt() {
        var c = serving(standbys: ["s1"])
        _ = c.requestDrain(DrainRequestBody(workerID: "w3"), client: [9], requestID: 5)
        _ = c.sessionsParked([], now: at(0))
        let gone = c.workerLost("s1", why: "killed", now: at(1))
        #expect(!gone.contains(.pauseSessions) && gone.last == .log(.info, "s1 held no layers; nothing to fail over"))
        #expect(c.drain != nil)
        // No session: once w2 loads w3's layers the drain ends without transfers.
        let done = c.shardReady("w2", layers: 10..<30, weightBytes: 1, now: at(2))
        #expect(done.contains(.resumeParked) && layers(c) == ["w1": 0..<10, "w2": 10..<30])
    }

    @Test func aDeathDuringADrainAbandonsItAndResetsItsReceivers() {
        var c = serving()
        _ = c.requestDrain(DrainRequestBody(workerID: "w2"), client: [9], requestID: 5)
        _ = c.sessionsParked([1], now: at(0))
        let actions = c.workerLost("w1", why: "killed", now: at(1))
        #expect(actions.contains(.pauseSessions))
        #expect(actions.contains { if case .sendToClient([9], let m) = $0, case .error(let e) = m.body { return e.message.contains("abandoned") } else { return false } })
        #expect(c.drain == nil)
        // w2 takes w1's layers back; w3, a receiver of the drain, reloads its own.
        #expect(assignments(actions).mapValues(\.layers) == ["w2": 0..<20, "w3": 20..<30])
    }

    @Test func drainsThatCannotBeDoneAreRefusedClearly() {
        var single = serving(["w1"])
        #expect(errors(single.requestDrain(DrainRequestBody(workerID: "w1"), client: [9], requestID: 1)).map(\.message)
                == ["w1 is the only worker; no one can take its layers"])
        #expect(single.drain == nil)

        var c = serving(standbys: ["s1"])
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "s1"), client: [9], requestID: 1)).map(\.message) == ["s1 is a standby and holds no layers"])
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "nobody"), client: [9], requestID: 1)).first?.message.hasPrefix("no worker named nobody") == true)
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "w2", baseline: "q8"), client: [9], requestID: 1)).count == 1)
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "w2"), client: [9], requestID: 1)).isEmpty)
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "w3"), client: [9], requestID: 2)).map(\.message) == ["a drain of w2 is in progress"])

        // Two workers drained one after the other: the last one has no one to take its layers.
        var two = serving(["w1", "w2"])
        _ = two.requestDrain(DrainRequestBody(workerID: "w1"), client: [9], requestID: 1)
        _ = two.sessionsParked([], now: at(0))
        #expect(two.shardReady("w2", layers: 0..<30, weightBytes: 1, now: at(1)).contains(.resumeParked))
        #expect(errors(two.requestDrain(DrainRequestBody(workerID: "w2"), client: [9], requestID: 2)).map(\.message)
                == ["w2 is the only worker; no one can take its layers"])
    }

    @Test func aDrainAskedForDuringAFailoverIsRefusedUntilItIsDone() {
        var c = serving(standbys: ["s1"])
        _ = c.workerLost("w2", why: "killed", now: at(0))
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "w3"), client: [9], requestID: 1)).map(\.message)
                == ["a failover of w2 is in progress; drain once it is done"])
        _ = c.shardReady("s1", layers: 10..<20, weightBytes: 1, now: at(1))
        _ = c.shardReady("w1", layers: 0..<10, weightBytes: 1, now: at(2))
        #expect(errors(c.requestDrain(DrainRequestBody(workerID: "w3"), client: [9], requestID: 2)).isEmpty)
        #expect(c.drain?.newLayers == ["s1": 10..<30])
    }

    @Test func aNeighbourWithoutRoomRefusesTheDrain() {
        var c = core(workers: 2)
        _ = register(&c, "w1", budget: 160)
        _ = register(&c, "w2", budget: 160)
        for w in c.workers {
            _ = c.shardReady(w.id, layers: w.layers!, weightBytes: 1, now: at(0))
            _ = c.dictionaryAck(w.id, hash: "d1", requestID: 0)
        }
        let refused = errors(c.requestDrain(DrainRequestBody(workerID: "w2"), client: [9], requestID: 1))
        #expect(refused.map(\.code) == [.outOfMemory])
        #expect(refused.first?.message == "w1 would serve layers 0..<30, which need 300 bytes; its budget is 160")
    }

    @Test func aDrainPastItsDeadlineFailsTheParkedSessions() {
        var c = serving()
        _ = c.requestDrain(DrainRequestBody(workerID: "w2"), client: [9], requestID: 5)
        _ = c.sessionsParked([1], now: at(0))
        #expect(!keepAlive(&c, from: 0, to: 10_000).contains { if case .failParked = $0 { return true } else { return false } })
        for id in c.watched { c.heard(id, now: at(10_050)) }
        let failed = c.tick(now: at(10_050))
        #expect(failed.contains(.failParked("the drain of w2 failed while its KV moved: not done within 10.0 seconds")))
        #expect(assignments(failed).mapValues(\.layers) == ["w1": 0..<10, "w3": 20..<30], "the receivers go back to their layers")
        #expect(c.drain == nil)
    }

    @Test func aDrainFailingBeforeAnyMoveResumesTheSessions() {
        var c = serving()
        _ = c.requestDrain(DrainRequestBody(workerID: "w2", minGenerated: 4), client: [9], requestID: 5)
        #expect(!c.drainHolds(generated: 3) && c.drainHolds(generated: 4))
        #expect(c.failDrain("test").last == .resumeParked)
    }
}
