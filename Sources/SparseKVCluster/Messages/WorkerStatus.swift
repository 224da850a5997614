/// One worker as the coordinator sees it, in its stats reply.
public struct WorkerStatus: Sendable, Equatable {
    /// The worker's id (its routing id).
    public var worker: String
    /// It loaded its layers and acked the dictionary (a standby: only the dictionary).
    public var ready: Bool
    /// The heartbeat monitor still hears it (a worker declared dead leaves the list).
    public var alive: Bool
    /// KV bytes it holds for the sessions in flight, as it reported them with their
    /// latest activations.
    public var kvBytes: UInt64

    public init(worker: String, ready: Bool, alive: Bool, kvBytes: UInt64) {
        self.worker = worker
        self.ready = ready
        self.alive = alive
        self.kvBytes = kvBytes
    }
}
