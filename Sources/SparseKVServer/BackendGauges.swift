import SparseKVCluster

/// A backend's state at one moment, for /metrics.
public struct BackendGauges: Sendable {
    public var activeSessions = 0
    public var queuedRequests = 0
    /// KV bytes held by the sessions in flight; nil where the backend does not know it (a
    /// cluster: the workers report a session's KV bytes only with its reply).
    public var kvCacheBytes: UInt64?
    public var kvCache = ""
    /// The CSR dictionary's content hash (empty without one).
    public var dictionaryHash = ""
    /// Worker id -> 1 when registered and ready, 0 when not (empty in a single process).
    public var workersReady: [String: Bool] = [:]
    /// The coordinator's socket counters (nil in a single process).
    public var traffic: TrafficSnapshot?

    public init() {}
}
