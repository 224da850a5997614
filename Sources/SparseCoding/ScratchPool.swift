import Foundation

/// Float buffers the decode path, prefill attention and the pursuit's correlation and Gram
/// buffers take and give back, instead of allocating per call.
///
/// A decode step needs a work buffer of a few hundred KiB per layer (scores, atom-space
/// accumulators, key and value scratch). At that size glibc maps each block on its own
/// (`MallocTuning.mmapThreshold` in SparseKVEngine), so a fresh buffer per layer and step cost an mmap, a
/// page fault per 4 KiB on first touch and a munmap that interrupts every core to flush
/// its TLB: 30 of each per token (seen with `strace -c`: ~19,000 munmaps in one
/// token-by-token eval window). The pool keeps a few buffers of at most ``largest`` bytes,
/// so what it holds stays small next to the model.
public final class ScratchPool: @unchecked Sendable {
    public static let shared = ScratchPool(keep: 6, largest: 4 << 20)

    private let lock = NSLock()
    /// Free buffers and their capacities in floats.
    private var free: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
    private let keep: Int, largest: Int

    init(keep: Int, largest: Int) {
        self.keep = keep
        self.largest = largest
    }

    deinit { for b in free { b.pointer.deallocate() } }

    /// Runs `body` with a buffer of at least `count` floats (uninitialized contents), then
    /// takes the buffer back. Concurrent callers get distinct buffers.
    public func withFloats<R>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        let b = take(count)
        defer { give(b) }
        return try body(b.pointer)
    }

    /// Buffers held for reuse (tests).
    var heldCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return free.count
    }

    private func take(_ count: Int) -> (pointer: UnsafeMutablePointer<Float>, capacity: Int) {
        lock.lock()
        // The smallest free buffer that is large enough.
        var best: Int?
        for i in free.indices where free[i].capacity >= count {
            if let j = best, free[j].capacity <= free[i].capacity { continue }
            best = i
        }
        if let best {
            let b = free.remove(at: best)
            lock.unlock()
            return b
        }
        lock.unlock()
        let capacity = max(count, 1)
        return (.allocate(capacity: capacity), capacity)
    }

    private func give(_ b: (pointer: UnsafeMutablePointer<Float>, capacity: Int)) {
        guard b.capacity * MemoryLayout<Float>.size <= largest else { return b.pointer.deallocate() }
        lock.lock()
        free.append(b)
        var dropped: UnsafeMutablePointer<Float>?
        if free.count > keep, let smallest = free.indices.min(by: { free[$0].capacity < free[$1].capacity }) {
            dropped = free.remove(at: smallest).pointer
        }
        lock.unlock()
        dropped?.deallocate()
    }
}
