import Foundation

/// Why a KV cache operation failed.
public enum KVCacheError: LocalizedError, Sendable, Equatable {
    case full(layer: Int, capacity: Int, needed: Int)
    case layerOutOfRange(layer: Int, layers: Range<Int>)
    case malformedPayload(String)
    case incompatiblePayload(String)
    case unknownKind(String)

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
        }
    }
}
