/// The cache types the engine can build, as named on the command line (`--kv`).
public enum KVCacheType: Sendable, Equatable, CustomStringConvertible {
    case fp32
    case fp16
    /// KIVI with 2, 4 or 8 bits and a 128-token fp16 window.
    case kivi(bits: Int)

    public init(parsing s: String) throws {
        switch s.lowercased() {
        case "fp32", "f32": self = .fp32
        case "fp16", "f16": self = .fp16
        case "kivi2": self = .kivi(bits: 2)
        case "kivi4": self = .kivi(bits: 4)
        case "kivi8": self = .kivi(bits: 8)
        default: throw KVCacheError.unknownKind(s)
        }
    }

    public var description: String {
        switch self {
        case .fp32: return "fp32"
        case .fp16: return "fp16"
        case .kivi(let b): return "kivi\(b)"
        }
    }

    /// A new, empty cache of this type for one session.
    public func makeCache(geometry: KVCacheGeometry, rope: RoPE) -> any KVCache {
        switch self {
        case .fp32: return DenseKVCache<Float>(geometry: geometry, rope: rope)
        case .fp16: return DenseKVCache<Float16>(geometry: geometry, rope: rope)
        case .kivi(let b): return KIVICache(geometry: geometry, rope: rope, bits: b)
        }
    }
}
