import Foundation

/// Why a GGUF file could not be read. Every case names the file.
public enum GGUFError: LocalizedError, Sendable, Equatable {
    case cannotOpen(path: String, reason: String)
    case badMagic(path: String, found: UInt32)
    case unsupportedVersion(path: String, version: UInt32)
    case truncated(path: String, what: String)
    case malformed(path: String, what: String)
    case unknownTensorType(path: String, tensor: String, typeID: UInt32)
    case tensorOutOfRange(path: String, tensor: String)
    case missingKey(path: String, key: String)
    case wrongKeyType(path: String, key: String, expected: String)
    case missingTensor(path: String, tensor: String)
    case badTensorShape(path: String, tensor: String, expected: [Int], found: [Int])

    public var errorDescription: String? {
        switch self {
        case .cannotOpen(let p, let r):
            return "\(p): cannot open GGUF file (\(r)). Check the path, or run scripts/setup.sh to fetch the model."
        case .badMagic(let p, let m):
            return "\(p): not a GGUF file (magic 0x\(String(m, radix: 16)), expected 0x46554747 \"GGUF\")."
        case .unsupportedVersion(let p, let v):
            return "\(p): GGUF version \(v) is not supported (versions 2 and 3 are)."
        case .truncated(let p, let w):
            return "\(p): file is truncated while reading \(w). Re-download it."
        case .malformed(let p, let w):
            return "\(p): malformed GGUF file: \(w)."
        case .unknownTensorType(let p, let t, let id):
            return "\(p): tensor '\(t)' has type id \(id), which SparseKV cannot read "
                + "(supported: \(GGMLType.allCases.map(\.description).joined(separator: ", ")))."
        case .tensorOutOfRange(let p, let t):
            return "\(p): data of tensor '\(t)' lies outside the file (truncated or corrupt file)."
        case .missingKey(let p, let k):
            return "\(p): metadata key '\(k)' is missing."
        case .wrongKeyType(let p, let k, let e):
            return "\(p): metadata key '\(k)' is not \(e)."
        case .missingTensor(let p, let t):
            return "\(p): tensor '\(t)' is missing."
        case .badTensorShape(let p, let t, let e, let f):
            return "\(p): tensor '\(t)' has shape \(f), expected \(e)."
        }
    }
}
