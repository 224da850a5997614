import Foundation
import SparseKVEngine

/// One request in a ``LocalBackend``: its own KV cache and sampler, advanced one unit of
/// work (a prefill chunk or one decode token) at a time by the backend's compute thread.
///
/// `@unchecked Sendable`: the cache, sampler, logits and counters are touched only by the
/// compute thread; `cancelled` is behind `lock`.
final class LocalSession: @unchecked Sendable {
    let job: GenerationJob
    let continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
    private let lock = NSLock()
    private var cancelRequested = false

    var cache: (any KVCache)?
    var sampler: Sampler
    var logits: [Float] = []
    /// Prompt tokens already in the cache.
    var prefilled = 0
    var generated = 0
    var started: ContinuousClock.Instant?
    var prefillEnd: ContinuousClock.Instant?
    var done = false

    init(job: GenerationJob, continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation) {
        self.job = job
        self.continuation = continuation
        sampler = Sampler(job.sampling)
    }

    func cancel() { lock.withLock { cancelRequested = true } }
    var isCancelled: Bool { lock.withLock { cancelRequested } }
}
