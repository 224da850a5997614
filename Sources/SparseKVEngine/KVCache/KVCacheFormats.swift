/// The registry of KV cache formats, keyed by kind: every kind ``KVCacheType`` can make
/// has exactly one entry. Code that moves caches (transfers, replicas, streams) asks it
/// instead of naming kinds.
public enum KVCacheFormats {
    /// Every format, in ``KVCacheType`` order.
    public static let all: [KVCacheFormat] =
        [DenseKVCache<Float>.format, DenseKVCache<Float16>.format]
            + KIVICache.supportedBits.map { KIVICache.format(bits: $0) } + [CSRCache.format]

    /// The format of caches of `kind` (as ``KVCache/kind`` and payload headers name it).
    /// - Throws: `KVCacheError.unknownKind` for a kind no cache type has.
    public static func format(kind: String) throws -> KVCacheFormat {
        guard let f = all.first(where: { $0.kind == kind }) else { throw KVCacheError.unknownKind(kind) }
        return f
    }

    /// The format of the caches a `--kv` spec makes (e.g. "csr:8,coef=i8" -> "csr").
    public static func format(spec: String) throws -> KVCacheFormat {
        try format(kind: KVCacheType.kind(ofSpec: spec))
    }

    /// Whether caches of `kind` can be kept as replicas (false for an unknown kind).
    public static func supportsReplica(kind: String) -> Bool {
        (try? format(kind: kind))?.supportsReplica ?? false
    }

    /// Whether payloads of `kind` are stamped with a dictionary hash (false for an unknown kind).
    public static func needsDictionary(kind: String) -> Bool {
        (try? format(kind: kind))?.needsDictionary ?? false
    }
}
