/// A process's byte counters (by peer and category) and what its caches hold.
public struct StatsReplyBody: Sendable, Equatable {
    public var traffic: TrafficSnapshot
    /// Bytes held by all sessions' KV caches.
    public var kvCacheBytes: UInt64
    public var sessionCount: Int
    /// A coordinator's state and workers (empty from a worker).
    public var cluster: ClusterStatus

    public init(traffic: TrafficSnapshot, kvCacheBytes: UInt64 = 0, sessionCount: Int = 0, cluster: ClusterStatus = ClusterStatus()) {
        self.cluster = cluster
        self.traffic = traffic
        self.kvCacheBytes = kvCacheBytes
        self.sessionCount = sessionCount
    }
}
