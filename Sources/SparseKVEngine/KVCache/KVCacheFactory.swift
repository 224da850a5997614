/// The cache types the engine can build, as named on the command line (`--kv`).
public enum KVCacheType: Sendable, Equatable, CustomStringConvertible {
    case fp32
    case fp16

    public init(parsing s: String) throws {
        switch s.lowercased() {
        case "fp32", "f32": self = .fp32
        case "fp16", "f16": self = .fp16
        default: throw KVCacheError.unknownKind(s)
        }
    }

    public var description: String {
        switch self {
        case .fp32: return "fp32"
        case .fp16: return "fp16"
        }
    }

    /// A new, empty cache of this type for one session.
    public func makeCache(geometry: KVCacheGeometry, rope: RoPE) -> any KVCache {
        switch self {
        case .fp32: return DenseKVCache<Float>(geometry: geometry, rope: rope)
        case .fp16: return DenseKVCache<Float16>(geometry: geometry, rope: rope)
        }
    }
}
