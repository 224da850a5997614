import Testing
@testable import SparseKVCluster

/// Session admission and per-step deadlines in the core: which requests are refused at
/// once, when a waiting one may start, and which session times out with what error.
extension CoordinatorCoreTests {
    func failures(_ actions: [CoordinatorAction]) -> [CoordinatorAction] {
        actions.filter { if case .failSession = $0 { return true } else { return false } }
    }

    @Test func requestsAreRefusedWithAReasonUntilTheClusterServesAndWhenItCannot() {
        var c = core()
        _ = register(&c, "w1")
        #expect(c.refusal(promptTokens: nil) == ErrorBody(code: .unexpectedMessage, message: "the cluster is not ready: 1/3 workers registered, waiting for w1"))
        #expect(!c.startsSessions)

        var s = serving()
        #expect(s.refusal(promptTokens: nil) == nil && s.refusal(promptTokens: 63) == nil)
        #expect(s.refusal(promptTokens: 64) == ErrorBody(code: .capacityExceeded, message: "the prompt has 64 tokens; 1...63 fit the context"))
        #expect(s.refusal(promptTokens: 0)?.code == .capacityExceeded)
        s.stop("the coordinator is shutting down")
        #expect(s.refusal(promptTokens: 8) == ErrorBody(code: .unreachable, message: "the coordinator is shutting down"))
        #expect(!s.startsSessions)
    }

    @Test func waitingRequestsStartOnlyBelowTheSessionLimitAndOutsideADrainOrAFailover() {
        var c = serving(standbys: ["s1"])
        #expect(c.startsSessions)
        for id in 1...UInt64(c.settings.maxSessions) { c.sessionStarted(id, promptTokens: 8) }
        #expect(!c.startsSessions, "\(c.settings.maxSessions) sessions generate")
        c.sessionEnded(1)
        #expect(c.startsSessions)

        _ = c.requestDrain(DrainRequestBody(workerID: "w3"), client: [9], requestID: 5)
        #expect(!c.startsSessions, "not during a drain")
        _ = c.failDrain("test")
        _ = c.workerLost("w2", why: "killed", now: at(0))
        #expect(!c.startsSessions, "not during a failover")
        _ = c.shardReady("s1", layers: 10..<20, weightBytes: 1, now: at(1))
        _ = c.shardReady("w1", layers: 0..<10, weightBytes: 1, now: at(2))
        #expect(c.startsSessions)
    }

    @Test func aStepWhoseStatesDoNotComeBackFailsItsSessionOnceWithTheReason() {
        var c = serving()
        c.sessionStarted(1, promptTokens: 8)
        c.sessionStarted(2, promptTokens: 8)
        c.stepSent(1, now: at(0))
        c.stepSent(2, now: at(0))
        c.sessionParked(2)
        // Every worker answers its pings: no failover can help the session.
        #expect(failures(keepAlive(&c, from: 0, to: 10_000)).isEmpty)
        for id in c.watched { c.heard(id, now: at(10_050)) }
        #expect(failures(c.tick(now: at(10_050)))
                == [.failSession(1, code: .unreachable, message: "no hidden states came back within 10.0 seconds; is every worker alive?")],
                "a parked session waits for its drain or handoff, not for its states")
        #expect(failures(keepAlive(&c, from: 10_100, to: 10_300)).isEmpty, "failed once")
    }

    @Test func aSessionIsNotFailedWhileItsDeadWorkerIsFailedOver() {
        var c = serving()
        c.sessionStarted(1, promptTokens: 8)
        c.stepSent(1, now: at(0))
        // w2 stops answering: declared dead after three silent intervals, its layers go to w1 and w3.
        var lost = false
        for ms in stride(from: 0, through: 9_000, by: 100) {
            for id in c.watched where id != "w2" { c.heard(id, now: at(ms)) }
            let actions = c.tick(now: at(ms))
            lost = lost || actions.contains(.pauseSessions)
            #expect(failures(actions).isEmpty)
        }
        #expect(lost && c.recovery != nil)
        _ = c.shardReady("w1", layers: 0..<15, weightBytes: 1, now: at(9_000))
        #expect(c.shardReady("w3", layers: 15..<30, weightBytes: 1, now: at(9_000)).contains { if case .rebuildSessions = $0 { return true } else { return false } })
        #expect(c.rebuild(session: 1, generatedTokens: 0, now: at(9_000)) == [.recomputeSession(1)])
        // The loop sends the rebuilt session's states again: a new step starts.
        c.stepSent(1, now: at(9_000))
        #expect(failures(keepAlive(&c, from: 9_100, to: 19_000)).isEmpty, "10 s after the first send, the session is alive")
        for id in c.watched { c.heard(id, now: at(19_050)) }
        #expect(failures(c.tick(now: at(19_050))).count == 1, "the rebuilt step has its own deadline")
    }
}
