/// Coordinator -> client: the outcome of a generate request (same request id), with the
/// coordinator's timings and byte counts of the pipeline traffic the request caused.
public struct GenerateReplyBody: Sendable, Equatable {
    public var promptTokens: [Int32]
    public var generatedTokens: [Int32]
    /// Decoded text of the generated tokens.
    public var text: String
    public var prefillNanoseconds: UInt64
    /// From the end of the prefill to the last token, less the time the session was paused
    /// while its KV moved (reported as kvTransferNanoseconds / kvBaselineNanoseconds).
    public var decodeNanoseconds: UInt64
    /// "length", "eos" or "context".
    public var stopReason: String
    /// The workers' cache kind, e.g. "csr" or "fp32".
    public var kvCache: String
    /// Bytes the session's KV caches held on all workers at the end.
    public var kvCacheBytes: UInt64
    /// The same per worker, in pipeline order, as each worker reported it (their sum is
    /// `kvCacheBytes`).
    public var kvBytesByWorker: [WorkerKVBytes]
    /// Activation bytes the coordinator sent and received for this request.
    public var activationBytesSent: UInt64
    public var activationBytesReceived: UInt64
    /// KV moved for this session between workers (a prefill -> decode handoff or a drain):
    /// kvTransfer messages as the receivers counted them, and the time the session waited.
    public var kvTransferBytes: UInt64
    public var kvTransferNanoseconds: UInt64
    /// The handoff's measured baseline (the same KV sent again in dense fp16, checked and
    /// discarded; coordinator --handoff-baseline), counted and timed the same way.
    public var kvBaselineBytes: UInt64
    public var kvBaselineNanoseconds: UInt64

    public init(promptTokens: [Int32], generatedTokens: [Int32], text: String, prefillNanoseconds: UInt64,
                decodeNanoseconds: UInt64, stopReason: String, kvCache: String, kvCacheBytes: UInt64,
                activationBytesSent: UInt64 = 0, activationBytesReceived: UInt64 = 0, kvTransferBytes: UInt64 = 0,
                kvTransferNanoseconds: UInt64 = 0, kvBaselineBytes: UInt64 = 0, kvBaselineNanoseconds: UInt64 = 0,
                kvBytesByWorker: [WorkerKVBytes] = []) {
        self.kvBytesByWorker = kvBytesByWorker
        self.promptTokens = promptTokens
        self.generatedTokens = generatedTokens
        self.text = text
        self.prefillNanoseconds = prefillNanoseconds
        self.decodeNanoseconds = decodeNanoseconds
        self.stopReason = stopReason
        self.kvCache = kvCache
        self.kvCacheBytes = kvCacheBytes
        self.activationBytesSent = activationBytesSent
        self.activationBytesReceived = activationBytesReceived
        self.kvTransferBytes = kvTransferBytes
        self.kvTransferNanoseconds = kvTransferNanoseconds
        self.kvBaselineBytes = kvBaselineBytes
        self.kvBaselineNanoseconds = kvBaselineNanoseconds
    }
}
