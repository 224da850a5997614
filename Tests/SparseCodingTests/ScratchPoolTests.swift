import Dispatch
import Foundation
import Testing
@testable import SparseCoding

@Suite struct ScratchPoolTests {
    /// A buffer given back is handed out again for a request it can hold; a larger request
    /// gets a new one, and the pool keeps no more than it was told to.
    @Test func buffersAreReusedAndBounded() {
        let pool = ScratchPool(keep: 2, largest: 1 << 20)
        let first = pool.withFloats(1000) { p in
            p.update(repeating: 1, count: 1000)
            return p
        }
        #expect(pool.heldCount == 1)
        #expect(pool.withFloats(600) { $0 } == first)
        let larger = pool.withFloats(5000) { $0 }
        #expect(larger != first && pool.heldCount == 2)
        // Smallest fit: the 1000-float buffer serves a 900-float request, not the 5000 one.
        #expect(pool.withFloats(900) { $0 } == first)
        _ = pool.withFloats(1) { a in pool.withFloats(1) { b in pool.withFloats(1) { c in (a, b, c) } } }
        #expect(pool.heldCount == 2)
        // Above `largest` bytes a buffer is not kept.
        _ = pool.withFloats(1 << 19) { $0 }
        #expect(pool.heldCount == 2)
    }

    /// Callers at the same time never share a buffer.
    @Test func concurrentCallersGetDistinctBuffers() {
        let pool = ScratchPool(keep: 4, largest: 1 << 20)
        let threads = 4, rounds = 200
        let failures = ManagedAtomicCounter()
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for r in 0..<rounds {
                pool.withFloats(256) { p in
                    let mark = Float(t * rounds + r)
                    p.update(repeating: mark, count: 256)
                    for _ in 0..<50 { if p[Int.random(in: 0..<256)] != mark { failures.increment() } }
                    if (0..<256).contains(where: { p[$0] != mark }) { failures.increment() }
                }
            }
        }
        #expect(failures.value == 0)
        #expect(pool.heldCount <= 4)
    }
}

/// A lock-protected counter for the concurrency test.
private final class ManagedAtomicCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
