/// What a process needs to know about one kind of KV cache to move it: how a payload of
/// that kind is decoded, what it can be sent as, whether it names a dictionary, and
/// whether a copy of it can be kept current as a replica. Each cache type declares its
/// own (``DenseKVCache/format``, ``KIVICache/format(bits:)``, ``CSRCache/format``);
/// ``KVCacheFormats`` keys them by kind. The format's bytes themselves (full transfer,
/// append payload) are the cache's own: ``KVCache/serialize(layers:)``,
/// ``KVCache/appendPayload(layers:tokens:)``, ``KVCache/applyAppendPayload(_:)``.
public struct KVCacheFormat: Sendable {
    /// The dense encoding every cache converts to: the baseline a transfer is measured against.
    public static let baselineEncoding = "fp16"

    /// The kind a cache of this format reports (``KVCache/kind``) and its payloads carry.
    public let kind: String
    /// Whether payloads of this kind are codes over a dictionary: they travel stamped with
    /// its content hash, and only a process holding the same dictionary decodes them.
    public let needsDictionary: Bool
    /// Whether a copy rebuilt from a full transfer takes this kind's append payloads and
    /// then holds, byte for byte, what the original holds.
    public let supportsReplica: Bool
    /// Rebuilds a cache from a full transfer of this kind.
    let decode: @Sendable (_ payload: [UInt8], _ capacity: Int, _ rope: RoPE, _ codec: CSRCodec?) throws -> any KVCache
    /// Parses an append payload of this kind completely without applying it.
    let checkAppend: @Sendable (_ payload: [UInt8], _ codec: CSRCodec?) throws -> (first: Int, tokens: Int)

    public init(kind: String, needsDictionary: Bool = false, supportsReplica: Bool,
                decode: @escaping @Sendable ([UInt8], Int, RoPE, CSRCodec?) throws -> any KVCache,
                checkAppend: @escaping @Sendable ([UInt8], CSRCodec?) throws -> (first: Int, tokens: Int)) {
        self.kind = kind
        self.needsDictionary = needsDictionary
        self.supportsReplica = supportsReplica
        self.decode = decode
        self.checkAppend = checkAppend
    }

    /// The encodings a cache of this kind can be sent as: its own, and the dense baseline.
    public var transferEncodings: [String] {
        kind == Self.baselineEncoding ? [kind] : [kind, Self.baselineEncoding]
    }

    /// Rebuilds a cache from a full transfer (``KVCache/serialize(layers:)``) of this kind,
    /// checking every length. `codec` is the process's CSR codec, needed when
    /// ``needsDictionary``; `capacity` must hold the payload's tokens.
    public func deserialize(_ payload: [UInt8], capacity: Int, rope: RoPE, codec: CSRCodec? = nil) throws -> any KVCache {
        if needsDictionary, codec == nil { throw CSRError.dictionaryRequired }
        let cache = try decode(payload, capacity, rope, codec)
        guard cache.kind == kind else { throw KVCacheError.incompatiblePayload("payload is '\(cache.kind)', not '\(kind)'") }
        return cache
    }

    /// Parses an append payload of this kind completely (for a receiver that counts and
    /// discards it). Returns (first position, tokens).
    public func checkAppendPayload(_ payload: [UInt8], codec: CSRCodec? = nil) throws -> (first: Int, tokens: Int) {
        if needsDictionary, codec == nil { throw CSRError.dictionaryRequired }
        return try checkAppend(payload, codec)
    }
}

extension KVCache {
    /// This cache's format, from the registry.
    public var format: KVCacheFormat {
        get throws { try KVCacheFormats.format(kind: kind) }
    }

    /// Whether a copy of this cache can be kept current with append payloads.
    public var acceptsAppendPayloads: Bool { (try? format)?.supportsReplica ?? false }

    /// `layers` of this cache as a transfer payload in `encoding`: its own kind
    /// (``serialize(layers:)``) or the dense baseline (``densePayload(layers:as:)``).
    public func transferPayload(layers: Range<Int>, encoding: String) throws -> [UInt8] {
        let encodings = try format.transferEncodings
        guard encodings.contains(encoding) else {
            throw KVCacheError.unsupportedEncoding(kind: kind, encoding: encoding, supported: encodings)
        }
        if encoding == kind { return try serialize(layers: layers) }
        return try densePayload(layers: layers, as: Float16.self)
    }
}
