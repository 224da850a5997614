/// A process's byte counters (by peer and category) and what its caches hold.
public struct StatsReplyBody: Sendable, Equatable {
    public var traffic: TrafficSnapshot
    /// Bytes held by all sessions' KV caches.
    public var kvCacheBytes: UInt64
    public var sessionCount: Int

    public init(traffic: TrafficSnapshot, kvCacheBytes: UInt64 = 0, sessionCount: Int = 0) {
        self.traffic = traffic
        self.kvCacheBytes = kvCacheBytes
        self.sessionCount = sessionCount
    }
}
