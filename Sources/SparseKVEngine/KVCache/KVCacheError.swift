import Foundation

/// Why a KV cache operation failed.
public enum KVCacheError: LocalizedError, Sendable, Equatable {
    case full(layer: Int, capacity: Int, needed: Int)
    case layerOutOfRange(layer: Int, layers: Range<Int>)
    case malformedPayload(String)
    case incompatiblePayload(String)
    case unknownKind(String)
    /// A transfer asked of a cache in an encoding it cannot be sent as.
    case unsupportedEncoding(kind: String, encoding: String, supported: [String])

    public var errorDescription: String? {
        switch self {
        case .full(let l, let c, let n):
            return "KV cache of layer \(l) is full: \(n) positions needed, capacity \(c). Use a larger --ctx or a shorter prompt."
        case .layerOutOfRange(let l, let r):
            return "layer \(l) is not held by this KV cache (layers \(r.lowerBound)..<\(r.upperBound))."
        case .malformedPayload(let w):
            return "malformed KV cache payload: \(w)."
        case .incompatiblePayload(let w):
            return "KV cache payload does not fit this cache: \(w)."
        case .unknownKind(let k):
            return "unknown KV cache type '\(k)' (known: fp32, fp16, kivi2, kivi4, kivi8, csr:S with --dict)."
        case .unsupportedEncoding(let k, let e, let s):
            return "a '\(k)' cache can be sent as \(s.map { "'\($0)'" }.joined(separator: " or ")), not as '\(e)'."
        }
    }
}
