import Testing
@testable import SparseKVCluster

/// The course of a failover (whom to wait for, when to rebuild, when to give up), driven
/// through its transitions without sockets, with plans from the real planner.
@Suite struct FailoverTrackerTests {
    typealias Member = FailoverPlanner.Member
    let t0 = ContinuousClock.now
    let three = [Member(id: "w1", layers: 0..<10, budget: 1_000), Member(id: "w2", layers: 10..<20, budget: 1_000),
                 Member(id: "w3", layers: 20..<30, budget: 1_000)]

    func plan(_ line: [Member], standbys: [Member] = [], dead: String) throws -> FailoverPlanner.Plan {
        try FailoverPlanner.plan(pipeline: line, standbys: standbys, dead: dead, layerCount: 30, bytesPerLayer: 10, fixedBytes: 0).get()
    }

    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    @Test func rebuildsOnceEveryAssignedWorkerReportsItsNewLayers() throws {
        var t = FailoverTracker(started: at(0), timeout: .seconds(10))
        let p = try plan(three, dead: "w2")
        #expect(t.workerLost("w2", plan: p, now: at(0)) == [.assign(worker: "w1", layers: 0..<15), .assign(worker: "w3", layers: 15..<30)])
        #expect(t.ready("w1", layers: 0..<10).isEmpty, "a report of its old layers does not count")
        #expect(t.ready("w2", layers: 10..<20).isEmpty, "nor one from a worker nobody waits for")
        #expect(t.ready("w1", layers: 0..<15).isEmpty)
        #expect(t.awaits("w3") && !t.awaits("w1"))
        #expect(t.ready("w3", layers: 15..<30) == [.rebuildSessions])
        #expect(t.isFinished)
        #expect(t.ready("w3", layers: 15..<30).isEmpty && t.tick(now: at(60_000)).isEmpty, "nothing happens after the end")
    }

    @Test func aStandbyLoadsAndThePreviousWorkerGetsItsNextHop() throws {
        var t = FailoverTracker(started: at(0), timeout: .seconds(10))
        let p = try plan(three, standbys: [Member(id: "s1", layers: nil, budget: 1_000)], dead: "w3")
        #expect(t.workerLost("w3", plan: p, now: at(0)) == [.assign(worker: "w2", layers: 10..<20), .assign(worker: "s1", layers: 20..<30)])
        #expect(t.ready("s1", layers: 20..<30).isEmpty)
        #expect(t.ready("w2", layers: 10..<20) == [.rebuildSessions])
    }

    @Test func aSecondDeathDuringTheFailoverMergesIntoIt() throws {
        var t = FailoverTracker(started: at(0), timeout: .seconds(10))
        let first = try plan(three, dead: "w2")
        _ = t.workerLost("w2", plan: first, now: at(0))
        #expect(t.ready("w1", layers: 0..<15).isEmpty)
        // w3 dies before reporting: it is not waited for any more; w1 takes everything and
        // must report again, although it already reported for the first plan.
        let second = try plan(first.pipeline, dead: "w3")
        #expect(t.workerLost("w3", plan: second, now: at(500)) == [.assign(worker: "w1", layers: 0..<30)])
        #expect(t.lost == ["w2", "w3"])
        #expect(!t.awaits("w3"))
        #expect(t.ready("w1", layers: 0..<15).isEmpty, "the first plan's report is stale now")
        #expect(t.ready("w1", layers: 0..<30) == [.rebuildSessions])
    }

    @Test func aDeathOfTheOnlyAwaitedWorkerRePlansWithoutIt() throws {
        var t = FailoverTracker(started: at(0), timeout: .seconds(10))
        let standby = Member(id: "s1", layers: nil, budget: 1_000)
        let first = try plan(three, standbys: [standby], dead: "w2")
        _ = t.workerLost("w2", plan: first, now: at(0))
        #expect(t.ready("w1", layers: 0..<10).isEmpty)
        // The standby dies while loading: w1 and w3 extend over its layers.
        let second = try plan(first.pipeline, dead: "s1")
        #expect(t.workerLost("s1", plan: second, now: at(300)) == [.assign(worker: "w1", layers: 0..<15), .assign(worker: "w3", layers: 15..<30)])
        #expect(t.ready("w1", layers: 0..<15).isEmpty)
        #expect(t.ready("w3", layers: 15..<30) == [.rebuildSessions])
    }

    @Test func givesUpAfterTheTimeoutCountedFromTheLatestDeath() throws {
        var t = FailoverTracker(started: at(0), timeout: .seconds(2))
        let first = try plan(three, dead: "w2")
        _ = t.workerLost("w2", plan: first, now: at(0))
        _ = t.workerLost("w3", plan: try plan(first.pipeline, dead: "w3"), now: at(1_500))
        #expect(t.tick(now: at(3_000)).isEmpty, "the second death moved the deadline")
        let actions = t.tick(now: at(3_600))
        guard case .giveUp(let why)? = actions.first else { Issue.record("expected giveUp, got \(actions)"); return }
        #expect(why.contains("w2, w3") && why.contains("w1"), "\(why)")
        #expect(t.isFinished && t.ready("w1", layers: 0..<30).isEmpty)
    }

    @Test func drainReceiversArePutBackOnThePlan() throws {
        var t = FailoverTracker(started: at(0), timeout: .seconds(10))
        let p = try plan(three, dead: "w1")
        // w3 had loaded extra layers for an abandoned drain of w2: it is reassigned too.
        #expect(t.workerLost("w1", plan: p, reset: ["w3"], now: at(0)) == [.assign(worker: "w2", layers: 0..<20), .assign(worker: "w3", layers: 20..<30)])
        #expect(t.ready("w2", layers: 0..<20).isEmpty)
        #expect(t.ready("w3", layers: 20..<30) == [.rebuildSessions])
    }
}
