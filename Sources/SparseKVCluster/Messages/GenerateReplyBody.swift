/// Coordinator -> client: the outcome of a generate request (same request id), with the
/// coordinator's timings and byte counts of the pipeline traffic the request caused.
public struct GenerateReplyBody: Sendable, Equatable {
    public var promptTokens: [Int32]
    public var generatedTokens: [Int32]
    /// Decoded text of the generated tokens.
    public var text: String
    public var prefillNanoseconds: UInt64
    public var decodeNanoseconds: UInt64
    /// "length", "eos" or "context".
    public var stopReason: String
    /// The workers' cache kind, e.g. "csr" or "fp32".
    public var kvCache: String
    /// Bytes the session's KV caches held on all workers at the end.
    public var kvCacheBytes: UInt64
    /// Activation bytes the coordinator sent and received for this request.
    public var activationBytesSent: UInt64
    public var activationBytesReceived: UInt64
    /// KV moved for this session between workers (a prefill -> decode handoff or a drain):
    /// kvTransfer messages as the receivers counted them, and the time the session waited.
    public var kvTransferBytes: UInt64
    public var kvTransferNanoseconds: UInt64

    public init(promptTokens: [Int32], generatedTokens: [Int32], text: String, prefillNanoseconds: UInt64,
                decodeNanoseconds: UInt64, stopReason: String, kvCache: String, kvCacheBytes: UInt64,
                activationBytesSent: UInt64 = 0, activationBytesReceived: UInt64 = 0, kvTransferBytes: UInt64 = 0,
                kvTransferNanoseconds: UInt64 = 0) {
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
    }
}
