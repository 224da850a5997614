import Foundation

/// Why a coordinator or worker could not start or had to stop.
public enum NodeError: LocalizedError, CustomStringConvertible, Sendable {
    /// The peer refused us (e.g. model fingerprint or dictionary mismatch).
    case refused(by: String, code: WireErrorCode, message: String)
    /// Nothing arrived from `peer` within the wait.
    case timedOut(waitingFor: String, peer: String)
    /// A configuration value is unusable.
    case badConfiguration(String)
    /// Workers' memory budgets cannot hold the model with the requested cache.
    case insufficientMemory(String)
    /// The cluster was stopped (signal or shutdown message) before it got ready.
    case stopped

    public var errorDescription: String? {
        switch self {
        case .refused(let peer, let code, let message):
            return "\(peer) refused us (\(code)): \(message)"
        case .timedOut(let what, let peer):
            return "timed out waiting for \(what) from \(peer); is it running and reachable?"
        case .badConfiguration(let s):
            return s
        case .insufficientMemory(let s):
            return s
        case .stopped:
            return "stopped before the cluster was ready"
        }
    }

    /// The same text as errorDescription, for printers that use String(describing:).
    public var description: String { errorDescription ?? "cluster error" }
}
