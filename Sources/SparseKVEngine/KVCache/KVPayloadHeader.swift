/// Header of a serialized KV cache (the KV transfer format):
/// magic "SKVC", format version, cache kind, layer range, KV heads, head dim, tokens,
/// and whether keys are stored rotated. The body's layout belongs to the kind.
public struct KVPayloadHeader: Sendable, Equatable {
    public static let magic: UInt32 = 0x4356_4B53  // "SKVC"
    /// 2: a CSR cache with a `recent=` buffer codes a token when it leaves the buffer, and
    /// its transfers say how many tokens are coded.
    public static let version: UInt16 = 2
    /// Largest header fields accepted from a peer.
    public static let maxLayers = 4096, maxHeads = 1024, maxHeadDim = 4096, maxTokens = 1 << 22

    public var kind: String
    public var layers: Range<Int>
    public var kvHeads: Int
    public var headDim: Int
    public var tokenCount: Int
    public var keysRotated: Bool

    public func write(to w: inout BinaryWriter) {
        w.write(Self.magic)
        w.write(Self.version)
        w.write(kind)
        w.write(UInt32(layers.lowerBound))
        w.write(UInt32(layers.upperBound))
        w.write(UInt32(kvHeads))
        w.write(UInt32(headDim))
        w.write(UInt32(tokenCount))
        w.write(UInt8(keysRotated ? 1 : 0))
    }

    public static func read(from r: inout BinaryReader) throws -> KVPayloadHeader {
        do {
            let magic = try r.read(UInt32.self, "magic")
            guard magic == Self.magic else { throw KVCacheError.malformedPayload("bad magic 0x\(String(magic, radix: 16))") }
            let version = try r.read(UInt16.self, "version")
            guard version == Self.version else { throw KVCacheError.malformedPayload("format version \(version), expected \(Self.version)") }
            let kind = try r.readString("kind", maxLength: 64)
            let lo = Int(try r.read(UInt32.self, "first layer")), hi = Int(try r.read(UInt32.self, "end layer"))
            let heads = Int(try r.read(UInt32.self, "kv heads")), dim = Int(try r.read(UInt32.self, "head dim"))
            let tokens = Int(try r.read(UInt32.self, "tokens"))
            let rotated = try r.read(UInt8.self, "keys rotated")
            guard lo < hi, hi <= maxLayers else { throw KVCacheError.malformedPayload("layer range \(lo)..<\(hi)") }
            guard (1...maxHeads).contains(heads), (1...maxHeadDim).contains(dim) else {
                throw KVCacheError.malformedPayload("kv heads \(heads), head dim \(dim)")
            }
            guard tokens <= maxTokens, rotated <= 1 else { throw KVCacheError.malformedPayload("tokens \(tokens), rotated flag \(rotated)") }
            return KVPayloadHeader(kind: kind, layers: lo..<hi, kvHeads: heads, headDim: dim, tokenCount: tokens, keysRotated: rotated == 1)
        } catch let e as BinaryReader.OutOfBounds {
            throw KVCacheError.malformedPayload("truncated in \(e.what)")
        }
    }
}
