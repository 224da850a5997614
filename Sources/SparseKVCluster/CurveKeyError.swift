import Foundation

/// Why CURVE keys could not be made, read or used.
public enum CurveKeyError: LocalizedError, CustomStringConvertible, Sendable, Equatable {
    case curveUnavailable
    case malformedKey(String, Int)
    case mismatchedPair
    case exists(String)
    case unreadable(String, String)
    case unwritable(String, String)
    case noServerKey(String)

    public var errorDescription: String? {
        switch self {
        case .curveUnavailable:
            return "this libzmq has no CURVE support (zmq_has(\"curve\") is false); install a libzmq built with libsodium, or run with --insecure"
        case .malformedKey(let what, let length):
            return "\(what) is not a Z85 CURVE key (40 characters expected, found \(length)); make keys with `sparsekv keys generate --out DIR`"
        case .mismatchedPair:
            return "key.pub does not belong to key; make a new pair with `sparsekv keys generate --out DIR`"
        case .exists(let path):
            return "\(path) already exists; keys are never overwritten: remove it first or pick another --out"
        case .unreadable(let path, let why):
            return "cannot read \(path): \(why); make keys with `sparsekv keys generate --out DIR`"
        case .unwritable(let path, let why):
            return "cannot write keys into \(path): \(why)"
        case .noServerKey(let endpoint):
            return "no CURVE public key for the server at \(endpoint): end the endpoint with #<its key.pub> or pass --server-key"
        }
    }

    /// The same text as errorDescription, for printers that use String(describing:).
    public var description: String { errorDescription ?? "CURVE key error" }
}
