import Testing
@testable import SparseKVCluster

/// The coordinator's liveness decisions, driven by a fake clock (instants built from one
/// origin), without sockets.
@Suite struct HeartbeatMonitorTests {
    let t0 = ContinuousClock.now
    let settings = HeartbeatMonitor.Settings(interval: .milliseconds(100), liveness: 4)

    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    func pinged(_ actions: [HeartbeatMonitor.Action]) -> [String] {
        actions.compactMap { if case .ping(let w, _) = $0 { return w } else { return nil } }
    }

    func lost(_ actions: [HeartbeatMonitor.Action]) -> [String] {
        actions.compactMap { if case .lost(let w, _) = $0 { return w } else { return nil } }
    }

    @Test func pingsEveryIntervalWithFreshNonces() {
        var m = HeartbeatMonitor(settings: settings)
        m.add("w1", now: at(0))
        m.add("w2", now: at(0))
        let first = m.tick(now: at(0))
        #expect(pinged(first) == ["w1", "w2"])
        #expect(pinged(m.tick(now: at(50))).isEmpty, "no ping before the interval")
        m.heard("w1", now: at(60))
        m.heard("w2", now: at(60))
        let second = m.tick(now: at(100))
        #expect(pinged(second) == ["w1", "w2"])
        let nonces = (first + second).compactMap { if case .ping(_, let n) = $0 { return n } else { return nil } }
        #expect(Set(nonces).count == 4, "every ping has its own nonce")
    }

    @Test func aSilentWorkerIsDeclaredDeadOnceAfterLivenessIntervals() {
        var m = HeartbeatMonitor(settings: settings)
        m.add("w1", now: at(0))
        m.add("w2", now: at(0))
        var deaths: [(String, Int)] = []
        for ms in stride(from: 0, through: 1000, by: 10) {
            m.heard("w1", now: at(ms))  // w1 answers, w2 is silent
            for w in lost(m.tick(now: at(ms))) { deaths.append((w, ms)) }
        }
        #expect(deaths.map(\.0) == ["w2"], "only the silent worker, and only once")
        let when = deaths.first?.1 ?? -1
        #expect(when > 400 && when <= 410, "declared dead just after liveness x interval (400 ms), at \(when) ms")
        #expect(m.watched == ["w1"])
        #expect(pinged(m.tick(now: at(1100))) == ["w1"], "a dead worker is not pinged any more")
    }

    @Test func anyMessageCountsAsLifeAndRemovedWorkersAreForgotten() {
        var m = HeartbeatMonitor(settings: settings)
        m.add("w1", now: at(0))
        m.add("w3", now: at(0))
        m.remove("w3")  // drained
        m.heard("w3", now: at(10))  // a late message from it changes nothing
        for ms in stride(from: 0, through: 2000, by: 100) {
            m.heard("w1", now: at(ms))
            #expect(lost(m.tick(now: at(ms))).isEmpty)
        }
        #expect(m.watched == ["w1"])
    }

    @Test func aHeldUpLoopDoesNotBlameTheWorkers() {
        var m = HeartbeatMonitor(settings: settings)
        m.add("w1", now: at(0))
        for ms in stride(from: 0, through: 200, by: 50) { _ = m.tick(now: at(ms)) }
        // The loop itself stood still for 3 s: nothing was read, nobody is dead.
        #expect(lost(m.tick(now: at(3_200))).isEmpty)
        // The silence outside the hold counts (200 ms before it, one interval of it, and
        // what follows): past 400 ms, at 3,350 ms, the worker is dead.
        var died: Int?
        for ms in stride(from: 3_250, through: 4_000, by: 50) where died == nil {
            if !lost(m.tick(now: at(ms))).isEmpty { died = ms }
        }
        #expect(died == 3_350, "declared dead at \(String(describing: died)) ms")
    }

    @Test func aLateTickDoesNotBurstPings() {
        var m = HeartbeatMonitor(settings: settings)
        m.add("w1", now: at(0))
        _ = m.tick(now: at(0))
        m.heard("w1", now: at(350))
        #expect(pinged(m.tick(now: at(350))) == ["w1"])
        #expect(pinged(m.tick(now: at(360))).isEmpty, "the next ping waits a full interval after a late one")
        #expect(pinged(m.tick(now: at(450))) == ["w1"])
    }
}
