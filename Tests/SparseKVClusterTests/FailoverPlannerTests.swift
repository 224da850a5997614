import Testing
@testable import SparseKVCluster

/// Who takes a dead worker's layers, decided without sockets.
@Suite struct FailoverPlannerTests {
    typealias Member = FailoverPlanner.Member
    let perLayer: UInt64 = 10
    let big: UInt64 = 1_000

    var three: [Member] {
        [Member(id: "w1", layers: 0..<10, budget: big), Member(id: "w2", layers: 10..<20, budget: big),
         Member(id: "w3", layers: 20..<30, budget: big)]
    }

    func plan(_ line: [Member], standbys: [Member] = [], dead: String) -> Result<FailoverPlanner.Plan, FailoverPlanner.Failure> {
        FailoverPlanner.plan(pipeline: line, standbys: standbys, dead: dead, layerCount: 30, bytesPerLayer: perLayer, fixedBytes: 5)
    }

    /// The new pipeline covers 0..<30 once, in order.
    func covers(_ p: FailoverPlanner.Plan) -> Bool {
        var next = 0
        for m in p.pipeline {
            guard let l = m.layers, l.lowerBound == next, !l.isEmpty else { return false }
            next = l.upperBound
        }
        return next == 30
    }

    @Test func aStandbyTakesTheDeadWorkersPlace() throws {
        let p = try plan(three, standbys: [Member(id: "s1", layers: nil, budget: big)], dead: "w2").get()
        #expect(p.pipeline.map(\.id) == ["w1", "s1", "w3"])
        #expect(p.pipeline[1].layers == 10..<20 && p.pipeline[1].segments == [10..<20])
        #expect(p.assign == ["w1", "s1"], "the standby loads; the previous worker gets its new next hop")
        #expect(covers(p))
    }

    @Test func aStandbyTooSmallIsPassedOver() throws {
        let p = try plan(three, standbys: [Member(id: "s1", layers: nil, budget: 50)], dead: "w2").get()
        #expect(!p.pipeline.contains { $0.id == "s1" })
        #expect(p.pipeline.map(\.id) == ["w1", "w3"])
        #expect(covers(p))
    }

    @Test(arguments: [("w1", ["w2", "w3"], [0..<20, 20..<30], ["w2"]),
                      ("w2", ["w1", "w3"], [0..<15, 15..<30], ["w1", "w3"]),
                      ("w3", ["w1", "w2"], [0..<10, 10..<30], ["w2"])])
    func neighboursExtendTheirRanges(dead: String, order: [String], layers: [Range<Int>], assign: [String]) throws {
        let p = try plan(three, dead: dead).get()
        #expect(p.pipeline.map(\.id) == order)
        #expect(p.pipeline.map(\.layers) == layers)
        #expect(p.assign == assign)
        #expect(covers(p))
        // Kept layers stay their own segment; the taken ones are added as new segments.
        for m in p.pipeline {
            let old = three.first { $0.id == m.id }!.layers!
            #expect(m.segments.contains(old))
            #expect(m.segments.reduce(0) { $0 + $1.count } == m.layers!.count)
        }
    }

    @Test func aFreshPlanWhenNeighboursCannotHoldIt() throws {
        // w1 and w3 hold 12 layers each: the 30 layers fit neither their halves (15 each)...
        let line = [Member(id: "w1", layers: 0..<10, budget: 125), Member(id: "w2", layers: 10..<20, budget: big),
                    Member(id: "w3", layers: 20..<30, budget: 125), ]
        let standbyless = plan(line, dead: "w2")
        guard case .failure(.insufficientMemory) = standbyless else {
            Issue.record("24 layers of room for 30 layers: \(standbyless)")
            return
        }
        // ...but with a small standby, a fresh plan over all three fits.
        let p = try plan(line, standbys: [Member(id: "s1", layers: nil, budget: 100)], dead: "w2").get()
        #expect(Set(p.pipeline.map(\.id)) == ["w1", "w3", "s1"])
        #expect(Set(p.assign) == ["w1", "w3", "s1"], "every worker gets its new range")
        #expect(covers(p))
        // Each worker's pieces are the ones it will hold: its old range kept when the new
        // one contains it, else one new piece.
        for m in p.pipeline {
            let old = line.first { $0.id == m.id }?.layers
            if let old, m.layers!.lowerBound <= old.lowerBound, old.upperBound <= m.layers!.upperBound {
                #expect(m.segments.contains(old) && m.segments.reduce(0) { $0 + $1.count } == m.layers!.count)
            } else {
                #expect(m.segments == [m.layers!])
            }
        }
    }

    @Test func theLastWorkerDyingLeavesNothing() {
        let one = [Member(id: "w1", layers: 0..<30, budget: big)]
        #expect(plan(one, dead: "w1") == .failure(.noWorkers))
        let p = plan(one, standbys: [Member(id: "s1", layers: nil, budget: big)], dead: "w1")
        #expect((try? p.get())?.pipeline.map(\.id) == ["s1"])
    }

    @Test func aSecondDeathDuringARecoveryPlansFromThePlanInProgress() throws {
        // w2 dies: w1 and w3 extend. Before they report, w3 dies too: w1 takes everything.
        let first = try plan(three, dead: "w2").get()
        let second = try plan(first.pipeline, dead: "w3").get()
        #expect(second.pipeline.map(\.id) == ["w1"])
        #expect(second.pipeline[0].layers == 0..<30)
        #expect(second.pipeline[0].segments == [0..<10, 10..<15, 15..<30])
        #expect(second.assign == ["w1"])
        #expect(covers(second))
    }

    @Test func aDeadStandbyChangesNothing() throws {
        let p = try plan(three, standbys: [Member(id: "s1", layers: nil, budget: big)], dead: "s1").get()
        #expect(p.pipeline == three && p.assign.isEmpty)
    }
}
