import Foundation

/// Why a coordinator or worker could not start or had to stop.
public enum NodeError: LocalizedError, CustomStringConvertible, Sendable, Equatable {
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
    /// The peer stopped answering heartbeats for `silence`.
    case peerLost(peer: String, silence: Duration)
    /// A signal ended a wait (`what` was awaited).
    case interrupted(waitingFor: String)

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
        case .peerLost(let peer, let silence):
            return "nothing heard from \(peer) for \(silence); it is gone (or declared this node dead). Restart it, then this node"
        case .interrupted(let what):
            return "interrupted by a signal while waiting for \(what)"
        }
    }

    /// The same text as errorDescription, for printers that use String(describing:).
    public var description: String { errorDescription ?? "cluster error" }
}
