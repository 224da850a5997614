/// Worker -> worker: one session's KV cache for a layer range (migration, prefill-to-decode
/// handoff, a measured baseline). The receiver refuses a CSR payload whose dictionary hash
/// differs from its own dictionary's.
public struct KVTransferBody: Sendable, Equatable {
    public var layers: Range<Int>
    /// The cache kind of the payload: "csr", or a dense baseline such as "fp16".
    public var encoding: String
    /// Content hash of the dictionary CSR codes refer to; empty for other encodings.
    public var dictionaryHash: String
    /// What the receiver does with it.
    public var mode: KVTransferMode
    /// ``SparseKVEngine/KVCache/serialize(layers:)`` output (starts with a
    /// ``SparseKVEngine/KVPayloadHeader`` whose kind and layers match the fields above).
    public var payload: [UInt8]

    public init(layers: Range<Int>, encoding: String, dictionaryHash: String = "", mode: KVTransferMode = .install,
                payload: [UInt8]) {
        self.layers = layers
        self.encoding = encoding
        self.dictionaryHash = dictionaryHash
        self.mode = mode
        self.payload = payload
    }
}
