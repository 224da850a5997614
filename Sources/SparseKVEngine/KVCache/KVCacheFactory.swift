/// The cache types the engine can build, as named on the command line (`--kv`).
public enum KVCacheType: Sendable, Equatable, CustomStringConvertible {
    case fp32
    case fp16
    /// KIVI with 2, 4 or 8 bits and a 128-token fp16 window.
    case kivi(bits: Int)
    /// CSR codes over a trained dictionary, with the codec's settings.
    case csr(CSRCodec)

    /// Parses a `--kv` value. `csr:...` (see ``CSRSettings``) needs the dictionary.
    public init(parsing s: String, dictionary: CSRDictionary? = nil) throws {
        if s.lowercased().hasPrefix(CSRCache.format.kind) {
            guard let dictionary else { throw CSRError.dictionaryRequired }
            let settings = try CSRSettings(parsing: s, valueChunks: dictionary.values.chunks)
            self = .csr(try CSRCodec(dictionary: dictionary, settings: settings))
            return
        }
        switch s.lowercased() {
        case "fp32", "f32": self = .fp32
        case "fp16", "f16": self = .fp16
        case "kivi2": self = .kivi(bits: 2)
        case "kivi4": self = .kivi(bits: 4)
        case "kivi8": self = .kivi(bits: 8)
        default: throw KVCacheError.unknownKind(s)
        }
    }

    /// The kind of the caches this type makes (``KVCache/kind``): "fp32", "fp16",
    /// "kivi2"..."kivi8" or "csr".
    public var kind: String {
        switch self {
        case .fp32: return DenseKVCache<Float>.format.kind
        case .fp16: return DenseKVCache<Float16>.format.kind
        case .kivi(let b): return KIVICache.format(bits: b).kind
        case .csr: return CSRCache.format.kind
        }
    }

    /// The kind a `--kv` spec makes, without the dictionary a CSR spec needs to be built.
    public static func kind(ofSpec s: String) throws -> String {
        if s.lowercased().hasPrefix(CSRCache.format.kind) { return CSRCache.format.kind }
        return try KVCacheType(parsing: s).kind
    }

    /// The CSR codec of a `csr` type (nil for the others).
    public var codec: CSRCodec? {
        if case .csr(let c) = self { return c }
        return nil
    }

    public var description: String {
        switch self {
        case .fp32: return "fp32"
        case .fp16: return "fp16"
        case .kivi(let b): return "kivi\(b)"
        case .csr(let c): return c.settings.description
        }
    }

    /// A new, empty cache of this type for one session.
    public func makeCache(geometry: KVCacheGeometry, rope: RoPE) -> any KVCache {
        switch self {
        case .fp32: return DenseKVCache<Float>(geometry: geometry, rope: rope)
        case .fp16: return DenseKVCache<Float16>(geometry: geometry, rope: rope)
        case .kivi(let b): return KIVICache(geometry: geometry, rope: rope, bits: b)
        case .csr(let c): return c.makeCache(geometry: geometry, rope: rope)
        }
    }

    public static func == (a: KVCacheType, b: KVCacheType) -> Bool {
        switch (a, b) {
        case (.fp32, .fp32), (.fp16, .fp16): return true
        case (.kivi(let x), .kivi(let y)): return x == y
        case (.csr(let x), .csr(let y)): return x === y
        default: return false
        }
    }
}
