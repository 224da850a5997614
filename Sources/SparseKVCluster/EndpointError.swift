import Foundation

/// Why an endpoint string was refused.
public enum EndpointError: LocalizedError, Sendable, Equatable {
    case invalid(String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .invalid(let s, let reason):
            return "endpoint '\(s)' is invalid: \(reason). Use tcp://HOST:PORT, ipc://PATH or inproc://NAME, optionally followed by #<server public key>."
        }
    }
}
