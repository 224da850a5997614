/// Worker -> coordinator: who the worker is, where peers reach it, how much memory it may
/// use, and which model it holds.
public struct RegisterBody: Sendable, Equatable {
    /// Unique name, also the worker's ZeroMQ routing id: 1...64 of A-Z a-z 0-9 . _ -
    public var workerID: String
    /// Where other workers connect to send activations and KV transfers.
    public var peerEndpoint: Endpoint
    /// Bytes the worker may spend on weights, caches and dictionaries.
    public var memoryBudgetBytes: UInt64
    /// ``SparseKVEngine/ModelFingerprint`` of the worker's GGUF file (hex).
    public var modelFingerprint: String

    public init(workerID: String, peerEndpoint: Endpoint, memoryBudgetBytes: UInt64, modelFingerprint: String) {
        self.workerID = workerID
        self.peerEndpoint = peerEndpoint
        self.memoryBudgetBytes = memoryBudgetBytes
        self.modelFingerprint = modelFingerprint
    }
}
