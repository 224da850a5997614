import Foundation
import Synchronization
import CShims

/// Persistent threads for the parallel loops of a decode step (matrix products and
/// attention), in place of `DispatchQueue.concurrentPerform`; prefill's products and
/// attention units run on them too when OpenBLAS runs on one thread (the CLI's setting),
/// each thread making its own single-threaded OpenBLAS calls.
///
/// A decode step of SmolLM2 runs about 120 products of 30-100 µs each. GCD parks its
/// workers as soon as a loop ends, and waking one takes from a few µs to far longer on a
/// busy machine, so a second thread gained little on products that small. These workers
/// spin for a while after each loop (``spinNanoseconds``) and only then sleep, so the next
/// loop of the same step finds them awake.
///
/// A loop's iterations are handed out one at a time from a single atomic word that holds
/// the loop's generation in its high bits and the next iteration in its low bits; a
/// worker claims an iteration with a compare-and-swap on the word it read, so a worker
/// that woke late for a finished loop can never take an iteration of the next one, and
/// the caller returns only when every iteration has run. One loop at a time: a call made
/// while another runs (another thread, or nested) goes to GCD instead.
final class ComputePool: @unchecked Sendable {
    static let shared = ComputePool()

    /// `SPARSEKV_COMPUTE_POOL=0` sends every loop to GCD instead (to compare, or on a
    /// machine so oversubscribed that spinning workers cost more than they save).
    static let enabled = ProcessInfo.processInfo.environment["SPARSEKV_COMPUTE_POOL"] != "0"

    /// How long a worker keeps polling for the next loop before it sleeps. A decode step's
    /// loops are separated by the caller's serial work (norms, a product too small to
    /// split, the sampler), 10-100 µs; waking a sleeping worker takes tens of µs more.
    /// Measured by the clock: a count of polls (20,000 here once) lasted anywhere from
    /// 20 to 200 µs depending on the CPU, and at 20 µs the worker slept through most
    /// gaps of a step and had to be woken for the next loop (fp16 decode at 512 tokens
    /// went from 68 to 86 tok/s with this and ``QuantizedMatrix/weightsPerThread``).
    static let spinNanoseconds: UInt64 = 300_000
    /// How long the caller polls for the workers to finish a loop before it yields its
    /// core at every poll (an oversubscribed machine may have preempted a worker there).
    static let yieldAfterNanoseconds: UInt64 = 50_000
    /// Polls between two reads of the clock.
    private static let pollsPerClockRead = 64

    private static let indexBits = 32
    private static let indexMask = (1 << indexBits) - 1

    /// generation << 32 | next iteration
    private let word = Atomic<Int>(0)
    /// Iterations finished in the current loop.
    private let finished = Atomic<Int>(0)
    /// Workers asleep (or about to be) on `condition`.
    private let sleepers = Atomic<Int>(0)
    /// Whether a loop is running.
    private let busy = Atomic<Bool>(false)
    private let condition = NSCondition()
    /// The current loop (guarded by `jobLock`): a worker copies it once per loop.
    private let jobLock = NSLock()
    private var job: (generation: Int, iterations: Int, body: @Sendable (Int) -> Void)?
    private var generation = 0
    /// Workers started (guarded by `condition`).
    private var workers = 0

    /// Runs body(0 ..< iterations) on the calling thread and up to `threads` - 1 workers;
    /// returns when all have run. `body` is escaping only because a worker may still hold
    /// it (never call it) after the loop ends.
    func perform(iterations n: Int, threads: Int, _ body: @escaping @Sendable (Int) -> Void) {
        guard n > 1, threads > 1 else {
            for i in 0..<n { body(i) }
            return
        }
        guard Self.enabled, n <= Self.indexMask, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            DispatchQueue.concurrentPerform(iterations: n, execute: body)
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        startWorkers(threads - 1)
        generation += 1
        let g = generation
        jobLock.lock()
        job = (g, n, body)
        jobLock.unlock()
        finished.store(0, ordering: .relaxed)
        word.store(g << Self.indexBits, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            condition.lock()
            condition.broadcast()
            condition.unlock()
        }
        work(generation: g)
        var polls = 0, since: UInt64 = 0, yielding = false
        while finished.load(ordering: .acquiring) < n {
            polls += 1
            if yielding {
                sched_yield()
            } else {
                sparsekv_spin_pause()
                // After ``yieldAfterNanoseconds``, let a worker preempted on this core run.
                yielding = polls % Self.pollsPerClockRead == 0
                    && !Self.spinning(since: &since, budget: Self.yieldAfterNanoseconds)
            }
        }
        jobLock.lock()
        job = nil
        jobLock.unlock()
    }

    /// Claims and runs iterations of loop `g` until none are left.
    private func work(generation g: Int) {
        jobLock.lock()
        let current = job
        jobLock.unlock()
        guard let current, current.generation == g else { return }
        var w = word.load(ordering: .acquiring)
        while w >> Self.indexBits == g, w & Self.indexMask < current.iterations {
            let (claimed, now) = word.compareExchange(expected: w, desired: w + 1, ordering: .acquiringAndReleasing)
            if claimed {
                current.body(w & Self.indexMask)
                finished.wrappingAdd(1, ordering: .releasing)
                w = word.load(ordering: .acquiring)
            } else {
                w = now
            }
        }
    }

    /// Whether a spin that started at `since` (0: not yet started, which starts it now)
    /// is still within `budget` nanoseconds.
    @inline(__always)
    private static func spinning(since: inout UInt64, budget: UInt64 = spinNanoseconds) -> Bool {
        let now = DispatchTime.now().uptimeNanoseconds
        if since == 0 { since = now }
        return now - since < budget
    }

    private func startWorkers(_ wanted: Int) {
        condition.lock()
        defer { condition.unlock() }
        while workers < wanted {
            workers += 1
            let thread = Thread { [unowned self] in self.workerLoop() }
            thread.name = "sparsekv-compute-\(workers)"
            thread.start()
        }
    }

    private func workerLoop() {
        var seen = word.load(ordering: .acquiring) >> Self.indexBits
        while true {
            var polls = 0
            var since: UInt64 = 0
            var g = word.load(ordering: .acquiring) >> Self.indexBits
            while g == seen {
                polls += 1
                if polls % Self.pollsPerClockRead != 0 || Self.spinning(since: &since) {
                    sparsekv_spin_pause()
                    g = word.load(ordering: .acquiring) >> Self.indexBits
                    continue
                }
                condition.lock()
                sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                while word.load(ordering: .sequentiallyConsistent) >> Self.indexBits == seen { condition.wait() }
                sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                condition.unlock()
                g = word.load(ordering: .acquiring) >> Self.indexBits
            }
            seen = g
            work(generation: g)
        }
    }
}
