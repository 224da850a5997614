import SparseKVCluster

/// A backend's state at one moment, for /metrics.
public struct BackendGauges: Sendable {
    public var activeSessions = 0
    public var queuedRequests = 0
    /// KV bytes held by the sessions in flight (a cluster: on all workers, as they reported
    /// them with each session's latest activations); nil while unknown.
    public var kvCacheBytes: UInt64?
    /// The same per worker id (empty in a single process).
    public var workerKVBytes: [String: UInt64] = [:]
    public var kvCache = ""
    /// The CSR dictionary's content hash (empty without one).
    public var dictionaryHash = ""
    /// Worker id -> true when registered, ready and alive; false when not, or when it left the
    /// cluster (declared dead, drained away) (empty in a single process).
    public var workersReady: [String: Bool] = [:]
    /// The coordinator's socket counters (nil in a single process).
    public var traffic: TrafficSnapshot?

    public init() {}
}
