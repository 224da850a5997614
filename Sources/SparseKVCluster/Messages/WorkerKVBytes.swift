/// The KV bytes one worker holds for something: a session (activations, generate reply)
/// or all its live sessions (stats reply).
public struct WorkerKVBytes: Sendable, Equatable {
    /// The worker's id (its routing id).
    public var worker: String
    /// Bytes its KV caches hold, every byte the cache counts (see `KVCache.byteCount`).
    public var bytes: UInt64

    public init(worker: String, bytes: UInt64) {
        self.worker = worker
        self.bytes = bytes
    }
}
