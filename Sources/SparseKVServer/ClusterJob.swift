import Foundation

/// A request the ``ClusterBackend`` passed to the coordinator, waiting for its tokens and
/// reply. `@unchecked Sendable`: `cancelled` is behind `lock`; the continuation is
/// thread-safe.
final class ClusterJob: @unchecked Sendable {
    let requestID: UInt64
    let job: GenerationJob
    let continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
    private let lock = NSLock()
    private var cancelRequested = false
    /// The bridge told the coordinator (generateCancel); read and written by the bridge thread only.
    var cancelSent = false

    init(requestID: UInt64, job: GenerationJob, continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation) {
        self.requestID = requestID
        self.job = job
        self.continuation = continuation
    }

    func cancel() { lock.withLock { cancelRequested = true } }
    var isCancelled: Bool { lock.withLock { cancelRequested } }
}
