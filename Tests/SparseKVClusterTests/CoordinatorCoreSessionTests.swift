import Testing
@testable import SparseKVCluster

/// The sessions' side of the core (SessionTable, CoordinatorCore+Sessions.swift): kept
/// replicas, a failover's replica installs, the prefill -> decode handoff and what every
/// transfer ack or failure means, driven with no process and no socket.
extension CoordinatorCoreTests {
    func ack(_ c: inout CoordinatorCore, _ request: (from: String, session: UInt64, id: UInt64, body: KVRequestBody), tokens: Int,
             wireBytes: UInt64 = 100, at ms: Int) -> [CoordinatorAction] {
        let to = endpoints.first { $0.value == request.body.destination }?.key ?? "?"
        return c.transferAcked(requestID: request.id, sessionID: request.session, from: to,
                               KVTransferAckBody(layers: request.body.layers, tokenCount: tokens, mode: request.body.mode, wireBytes: wireBytes),
                               now: at(ms))
    }

    /// Three workers serving session 1 (8 prompt tokens) in its first decode step, every
    /// replica acked with `tokens`; then w2 dies and w1 and w3 take its layers.
    func failedOverWithReplicas(tokens: Int = 12) -> CoordinatorCore {
        var c = serving()
        c.sessionStarted(1, promptTokens: 8)
        for r in kvRequests(c.sessionSends(1, pipeline: 0, phase: .decode, now: at(0))) { _ = ack(&c, r, tokens: tokens, at: 1) }
        _ = c.workerLost("w2", why: "killed", now: at(10))
        _ = c.shardReady("w1", layers: 0..<15, weightBytes: 1, now: at(20))
        _ = c.shardReady("w3", layers: 15..<30, weightBytes: 1, now: at(20))
        return c
    }

    func isRecompute(_ a: CoordinatorAction) -> Bool { if case .recomputeSession = a { return true } else { return false } }
    func isResume(_ a: CoordinatorAction) -> Bool { if case .resumeSession = a { return true } else { return false } }

    // MARK: - Replicas

    @Test func theFirstDecodeStepAsksEachWorkerForAReplicaOnTheNextAndAcksRecordThem() {
        var c = serving()
        c.sessionStarted(1, promptTokens: 8)
        #expect(c.sessionSends(1, pipeline: 0, phase: .prefill, now: at(0)).isEmpty, "no replica before the prompt is in")
        let requests = kvRequests(c.sessionSends(1, pipeline: 0, phase: .decode, now: at(0)))
        #expect(requests.map(\.from) == ["w1", "w2", "w3"])
        #expect(requests.map(\.body) == [KVRequestBody(layers: 0..<10, destination: endpoint("w2"), encoding: "csr", mode: .replica),
                                         KVRequestBody(layers: 10..<20, destination: endpoint("w3"), encoding: "csr", mode: .replica),
                                         KVRequestBody(layers: 20..<30, destination: endpoint("w1"), encoding: "csr", mode: .replica)])
        #expect(c.sessionSends(1, pipeline: 0, phase: .decode, now: at(1)).isEmpty, "asked once per plan")
        #expect(c.sessions[1]?.replicas.allSatisfy { $0.tokens == nil } == true)
        let acked = ack(&c, requests[1], tokens: 9, wireBytes: 4_000, at: 2)
        #expect(acked == [.log(.info, "session 1: w3 keeps the replica of w2's layers 10..<20: 9 tokens, 4000 bytes of csr")])
        #expect(c.sessions[1]?.replicas.map(\.tokens) == [nil, 9, nil])
        #expect(c.sessions.transfers.count == 2)

        // A failed replica is dropped: a failover would recompute.
        let failed = c.transferFailed(requestID: requests[0].id, message: "w1: unreachable", now: at(3))
        #expect(failed.count == 1 && c.sessions[1]?.replicas.map(\.source) == ["w2", "w3"])

        var off = CoordinatorCore(settings: { var s = c.settings; s.replicas = false; return s }())
        off.sessionStarted(1, promptTokens: 8)
        #expect(off.sessionSends(1, pipeline: 0, phase: .decode, now: at(0)).isEmpty, "--replicas 0 keeps none")
    }

    @Test func installAcksAreCountedUntilTheSessionResumesAtTheFewestTokens() {
        var c = failedOverWithReplicas()
        // w2's replica lives on w3; its layers now sit on w1 (10..<15) and w3 (15..<20).
        let rebuild = c.rebuild(session: 1, generatedTokens: 5, now: at(30))
        let installs = kvRequests(rebuild)
        #expect(installs.map(\.from) == ["w3", "w3"])
        #expect(installs.map(\.body) == [KVRequestBody(layers: 10..<15, destination: endpoint("w1"), encoding: "csr", mode: .install),
                                         KVRequestBody(layers: 15..<20, destination: endpoint("w3"), encoding: "csr", mode: .install)])
        #expect(rebuild.last == .log(.info, "session 1: installing replicas: w3 -> w1 10..<15, w3 -> w3 15..<20"))
        #expect(c.sessions[1]?.install?.pending == 2)
        #expect(ack(&c, installs[0], tokens: 12, at: 40).isEmpty, "one install of two")
        // The prompt (8) and 5 tokens: the caches hold at most 12 positions.
        #expect(ack(&c, installs[1], tokens: 11, at: 50) == [.log(.info, "session 1: replicas installed; resuming at token 11"),
                                                              .resumeSession(1, atToken: 11)])
        #expect(c.sessions[1]?.install == nil && c.sessions[1]?.replicated == false)
        // On the new plan the session asks for its replicas again.
        let again = kvRequests(c.sessionSends(1, pipeline: 0, phase: .decode, now: at(60)))
        #expect(again.map(\.from) == ["w1", "w1", "w3", "w3"])
        #expect(again.map(\.body.layers) == [0..<10, 10..<15, 15..<20, 20..<30])
    }

    @Test func aFailedInstallRecomputesAndItsOtherInstallsAreForgotten() {
        var c = failedOverWithReplicas()
        let installs = kvRequests(c.rebuild(session: 1, generatedTokens: 5, now: at(30)))
        let failed = c.transferFailed(requestID: installs[0].id, message: "w1: out of memory", now: at(40))
        #expect(failed == [.log(.warning, "session 1: installing the replica of layers 10..<15 on w1 failed (w1: out of memory); recomputing"),
                           .recomputeSession(1)])
        #expect(c.sessions.transfers.isEmpty && c.sessions[1]?.install == nil)
        #expect(ack(&c, installs[1], tokens: 12, at: 50) == [.log(.debug, "ack for request \(installs[1].id) from w3, not a pending transfer")],
                "the other install's late ack does not resume the session a second time")
    }

    @Test func anInstallNotAckedWithinTheStepTimeoutRecomputes() {
        var c = failedOverWithReplicas()
        let installs = kvRequests(c.rebuild(session: 1, generatedTokens: 5, now: at(100)))
        _ = ack(&c, installs[0], tokens: 12, at: 150)
        #expect(!keepAlive(&c, from: 200, to: 10_000).contains(where: isRecompute))
        for id in c.watched { c.heard(id, now: at(10_150)) }
        let late = c.tick(now: at(10_150))
        #expect(late.contains(.recomputeSession(1)))
        #expect(late.contains(.log(.warning, "session 1: installing the replica of layers 15..<20 on w3 failed (not acknowledged within 10.0 seconds); recomputing")))
        #expect(!c.tick(now: at(10_200)).contains(where: isRecompute), "recomputed once")
    }

    @Test func aSessionWithoutCompleteReplicasIsRecomputedAtOnce() {
        var short = failedOverWithReplicas(tokens: 5)
        #expect(short.rebuild(session: 1, generatedTokens: 5, now: at(30)) == [.recomputeSession(1)], "replicas shorter than the prompt")
        var prefill = failedOverWithReplicas()
        #expect(prefill.rebuild(session: 1, generatedTokens: 0, now: at(30)) == [.recomputeSession(1)], "nothing generated yet")
        #expect(prefill.sessions.transfers.isEmpty)
    }

    @Test func acksOfUnknownStaleOrWrongTransfersChangeNothingOrFailTheTransfer() {
        var c = serving()
        c.sessionStarted(1, promptTokens: 8)
        let requests = kvRequests(c.sessionSends(1, pipeline: 0, phase: .decode, now: at(0)))
        let before = c.sessions
        let unknown = c.transferAcked(requestID: 42, sessionID: 1, from: "w2", KVTransferAckBody(layers: 0..<10, tokenCount: 9, mode: .replica), now: at(1))
        #expect(unknown == [.log(.debug, "ack for request 42 from w2, not a pending transfer")])
        #expect(c.sessions.transfers == before.transfers && c.sessions[1] == before[1])

        // An ack from another worker than the receiver fails that transfer (its replica is dropped).
        let wrong = c.transferAcked(requestID: requests[0].id, sessionID: 1, from: "w3",
                                    KVTransferAckBody(layers: 0..<10, tokenCount: 9, mode: .replica), now: at(2))
        #expect(wrong.count == 1 && c.sessions[1]?.replicas.map(\.source) == ["w2", "w3"])

        // Once the session ended, its transfers are forgotten. A copy that still lands (it
        // left before the session's dropSession and arrived after it) is dropped again on
        // the worker that kept it.
        c.sessionEnded(1)
        #expect(c.sessions.transfers.isEmpty && c.sessions[1] == nil)
        #expect(ack(&c, requests[1], tokens: 9, at: 3) == [
            .log(.info, "session 1 has ended; w3 drops the copy of layers 10..<20 that reached it late"),
            .send(worker: "w3", WireMessage(.dropSession, sessionID: 1))])
        // A measured transfer keeps nothing; an ack from no worker of the cluster changes nothing.
        let measured = c.transferAcked(requestID: 77, sessionID: 1, from: "w3", KVTransferAckBody(layers: 0..<10, tokenCount: 9, mode: .measure), now: at(4))
        #expect(measured == [.log(.debug, "ack for request 77 from w3, not a pending transfer")])
        let stranger = c.transferAcked(requestID: 78, sessionID: 1, from: "w9", KVTransferAckBody(layers: 0..<10, tokenCount: 9, mode: .replica), now: at(4))
        #expect(stranger == [.log(.debug, "ack for request 78 from w9, not a pending transfer")])
    }

    @Test func aSecondDeathForgetsTheInstallsButKeepsTheReplicasForTheNextPlan() {
        var c = failedOverWithReplicas()
        let installs = kvRequests(c.rebuild(session: 1, generatedTokens: 5, now: at(30)))
        #expect(installs.count == 2)
        _ = c.workerLost("w1", why: "killed", now: at(40))
        #expect(c.sessions.transfers.isEmpty && c.sessions[1]?.install == nil)
        #expect(ack(&c, installs[1], tokens: 12, at: 50).allSatisfy { !isResume($0) })
        #expect(c.sessions[1]?.replicas.isEmpty == false, "the copies stay for the next plan")
    }

    // MARK: - Handoff

    func handingOff(baseline: String = "") -> CoordinatorCore {
        var settings = core(workers: 4).settings
        settings.prefillWorkers = 2
        settings.handoffBaseline = baseline
        var c = CoordinatorCore(settings: settings)
        for id in ["w1", "w2", "w3", "w4"] { _ = register(&c, id) }
        for w in c.workers {
            _ = c.shardReady(w.id, layers: w.layers!, weightBytes: 1, now: at(0))
            _ = c.dictionaryAck(w.id, hash: "d1", requestID: 0)
        }
        c.sessionStarted(1, promptTokens: 8)
        return c
    }

    @Test func aHandoffWaveEndsWithItsLastAckThenTheBaselineWaveIsTimedAlone() {
        var c = handingOff(baseline: "fp16")
        #expect(!c.keepsReplicas(pipeline: 0) && c.sessionSends(1, pipeline: 0, phase: .decode, now: at(0)).isEmpty, "no replica on the prefill pipeline")
        let wave = kvRequests(c.startHandoff(1, now: at(0)))
        #expect(wave.map(\.from) == ["w1", "w2"] && wave.map(\.body.destination) == [endpoint("w3"), endpoint("w4")])
        #expect(ack(&c, wave[0], tokens: 8, wireBytes: 300, at: 10).isEmpty)
        let measure = kvRequests(ack(&c, wave[1], tokens: 8, wireBytes: 200, at: 20))
        #expect(measure.map(\.body.mode) == [.measure, .measure] && measure.map(\.body.encoding) == ["fp16", "fp16"])
        _ = ack(&c, measure[0], tokens: 8, wireBytes: 1_000, at: 50)
        let done = ack(&c, measure[1], tokens: 8, wireBytes: 1_000, at: 70)
        #expect(done == [.log(.info, "session 1: KV handed from the prefill to the decode workers, 500 bytes"), .finishHandoff(1)])
        #expect(c.sessions[1]?.transferNanoseconds == 20_000_000 && c.sessions[1]?.baselineNanoseconds == 50_000_000)
        #expect(c.sessions[1]?.transferBytes == 500 && c.sessions[1]?.baselineBytes == 2_000)
    }

    @Test func theDecodeWorkersKeepReplicasAndAStandbyTakesADeadOnesPlaceFromItsReplica() {
        var c = handingOff()
        _ = register(&c, "s1")
        _ = c.dictionaryAck("s1", hash: "d1", requestID: 0)
        // After the handoff the session decodes on w3 (0..<15) and w4 (15..<30), which keep each other's replicas.
        let requests = kvRequests(c.sessionSends(1, pipeline: 1, phase: .decode, now: at(0)))
        #expect(requests.map(\.from) == ["w3", "w4"])
        #expect(requests.map(\.body) == [KVRequestBody(layers: 0..<15, destination: endpoint("w4"), encoding: "csr", mode: .replica),
                                         KVRequestBody(layers: 15..<30, destination: endpoint("w3"), encoding: "csr", mode: .replica)])
        for r in requests { _ = ack(&c, r, tokens: 12, at: 1) }

        let lost = c.workerLost("w4", why: "killed", now: at(10))
        #expect(assignments(lost).mapValues(\.layers) == ["s1": 15..<30, "w3": 0..<15])
        #expect(assignments(lost)["w3"]?.nextHop == .peer(endpoint("s1")) && assignments(lost)["s1"]?.nextHop == .coordinator)
        #expect(c.pipeline(0).map { c.workers[$0].id } == ["w1", "w2"] && c.pipeline(1).map { c.workers[$0].id } == ["w3", "s1"],
                "the prefill pipeline is untouched")
        _ = c.shardReady("s1", layers: 15..<30, weightBytes: 1, now: at(20))
        #expect(c.shardReady("w3", layers: 0..<15, weightBytes: 1, now: at(20)).last == .rebuildSessions(lost: ["w4"], milliseconds: 10))
        let installs = kvRequests(c.rebuild(session: 1, generatedTokens: 5, now: at(30)))
        #expect(installs.map(\.from) == ["w3"]
                && installs.map(\.body) == [KVRequestBody(layers: 15..<30, destination: endpoint("s1"), encoding: "csr", mode: .install)])
        #expect(ack(&c, installs[0], tokens: 12, at: 40).last == .resumeSession(1, atToken: 12))
        #expect(c.handoffMoves == [CoordinatorCore.HandoffMove(from: "w1", to: "w3", layers: 0..<15),
                                   CoordinatorCore.HandoffMove(from: "w2", to: "s1", layers: 15..<30)])
    }

    @Test func withAHandoffADeathNoStandbyCanTakeGivesUp() {
        var c = handingOff()
        let lost = c.workerLost("w3", why: "killed", now: at(0))
        #expect(lost.last == .giveUp("w3 (layers 0..<15) died: killed; with --prefill-workers only a standby can take a dead worker's place (the prefill and decode pipelines keep one layer split); start one with enough memory"))
    }

    @Test func aFailedHandoffFailsItsSession() {
        var c = handingOff()
        let wave = kvRequests(c.startHandoff(1, now: at(0)))
        #expect(c.transferFailed(requestID: wave[1].id, message: "w2: internalError no session", now: at(5))
                == [.failSession(1, code: .internalError, message: "handoff of layers 15..<30: w2: internalError no session")])
    }
}
