import Foundation
import Dispatch
import Testing
@testable import SparseKVEngine

/// Every iteration of every loop runs exactly once, whether the workers are spinning
/// (loops back to back), asleep (a pause past the spin budget), or the pool is busy with
/// another caller's loop (that caller goes to GCD).
@Suite struct ComputePoolTests {
    final class Counts: @unchecked Sendable {
        private let lock = NSLock()
        private var cells: [Int]
        init(_ n: Int) { cells = Array(repeating: 0, count: n) }
        func hit(_ i: Int) {
            lock.lock()
            cells[i] += 1
            lock.unlock()
        }
        var values: [Int] {
            lock.lock()
            defer { lock.unlock() }
            return cells
        }
    }

    @Test func everyIterationRunsOnceBackToBackAndAfterSleeping() throws {
        let pool = ComputePool.shared
        var rng = SystemRandomNumberGenerator()
        for round in 0..<2_000 {
            let n = Int.random(in: 1...13, using: &rng)
            let counts = Counts(n)
            pool.perform(iterations: n, threads: 1 + round % 3) { counts.hit($0) }
            #expect(counts.values == Array(repeating: 1, count: n), "round \(round), \(n) iterations")
            if round % 500 == 499 { usleep(300_000) }  // past the spin budget: workers sleep
        }
    }

    @Test func concurrentCallersEachGetTheirOwnLoop() throws {
        let all = Counts(4 * 100 * 7)
        DispatchQueue.concurrentPerform(iterations: 4) { caller in
            for loop in 0..<100 {
                let base = (caller * 100 + loop) * 7
                ComputePool.shared.perform(iterations: 7, threads: 2) { all.hit(base + $0) }
            }
        }
        #expect(all.values == Array(repeating: 1, count: 4 * 100 * 7))
    }
}
