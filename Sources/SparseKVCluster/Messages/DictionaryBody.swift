/// Coordinator -> worker: the shared CSR dictionary, as the GGUF file
/// ``SparseKVEngine/CSRDictionary/ggufData()`` writes. The worker loads it, checks that its
/// content hash equals `contentHash`, and answers with a dictionary ack.
public struct DictionaryBody: Sendable, Equatable {
    /// ``SparseKVEngine/CSRDictionary/contentHash`` (hex SHA-256).
    public var contentHash: String
    /// The GGUF file's bytes.
    public var gguf: [UInt8]

    public init(contentHash: String, gguf: [UInt8]) {
        self.contentHash = contentHash
        self.gguf = gguf
    }
}
