import Testing
@testable import SparseKVCluster

/// Which replica pieces a failover installs where, or that the session must recompute.
@Suite struct ReplicaInstallPlannerTests {
    typealias P = ReplicaInstallPlanner

    /// w1 0..<10, w2 10..<20, w3 20..<30; each worker's replica on the next one (w3's on w1).
    static let copies = [P.Copy(source: "w1", holder: "w2", layers: 0..<10, tokens: 12),
                         P.Copy(source: "w2", holder: "w3", layers: 10..<20, tokens: 12),
                         P.Copy(source: "w3", holder: "w1", layers: 20..<30, tokens: 11)]

    @Test func aStandbyGetsTheWholeReplicaFromItsHolder() {
        let moves = P.moves(lost: ["w2": [10..<20]], copies: Self.copies,
                            pipeline: [("w1", 0..<10), ("s1", 10..<20), ("w3", 20..<30)], alive: ["w1", "w3", "s1"], promptTokens: 5)
        #expect(moves == [P.Move(holder: "w3", layers: 10..<20, to: "s1")])
    }

    @Test func neighboursSplitTheReplicaTheHolderInstallsItsOwnPiece() {
        let moves = P.moves(lost: ["w2": [10..<20]], copies: Self.copies,
                            pipeline: [("w1", 0..<15), ("w3", 15..<30)], alive: ["w1", "w3"], promptTokens: 5)
        #expect(moves == [P.Move(holder: "w3", layers: 10..<15, to: "w1"), P.Move(holder: "w3", layers: 15..<20, to: "w3")])
    }

    @Test func aDeadWorkerWithSeveralSegmentsNeedsACopyOfEach() {
        let copies = Self.copies + [P.Copy(source: "w3", holder: "w1", layers: 30..<32, tokens: 12)]
        let pipeline: [(id: String, layers: Range<Int>)] = [("w1", 0..<32)]
        let alive: Set<String> = ["w1"]
        #expect(P.moves(lost: ["w3": [20..<30, 30..<32], "w2": [10..<20]], copies: copies, pipeline: pipeline, alive: alive, promptTokens: 5) == nil,
                "w2's copy was on w3, which died too")
        let moves = P.moves(lost: ["w3": [20..<30, 30..<32]], copies: copies, pipeline: pipeline, alive: alive, promptTokens: 5)
        #expect(moves == [P.Move(holder: "w1", layers: 20..<30, to: "w1"), P.Move(holder: "w1", layers: 30..<32, to: "w1")])
        #expect(P.moves(lost: ["w3": [20..<30, 30..<31]], copies: copies, pipeline: pipeline, alive: alive, promptTokens: 5) == nil,
                "no copy of exactly that segment")
    }

    @Test func withoutAnAckedCopyHoldingThePromptTheSessionRecomputes() {
        let pipeline: [(id: String, layers: Range<Int>)] = [("w2", 0..<20), ("w3", 20..<30)]
        var copies = Self.copies
        copies[0].tokens = nil
        #expect(P.moves(lost: ["w1": [0..<10]], copies: copies, pipeline: pipeline, alive: ["w2", "w3"], promptTokens: 5) == nil, "not acked")
        #expect(P.moves(lost: ["w1": [0..<10]], copies: Self.copies, pipeline: pipeline, alive: ["w2", "w3"], promptTokens: 13) == nil,
                "made before the prompt was in")
        #expect(P.moves(lost: ["w1": [0..<10]], copies: [], pipeline: pipeline, alive: ["w2", "w3"], promptTokens: 5) == nil, "no copy")
        #expect(P.moves(lost: ["w1": [0..<10]], copies: Self.copies, pipeline: [("w2", 5..<20), ("w3", 20..<30)], alive: ["w2", "w3"],
                        promptTokens: 5) == nil, "layers 0..<5 served by no one")
        #expect(P.moves(lost: ["w1": [0..<10]], copies: Self.copies, pipeline: pipeline, alive: ["w2", "w3"], promptTokens: 5)
                == [P.Move(holder: "w2", layers: 0..<10, to: "w2")])
        #expect(P.moves(lost: [:], copies: Self.copies, pipeline: pipeline, alive: ["w2", "w3"], promptTokens: 5) == nil, "nothing lost")
    }
}
