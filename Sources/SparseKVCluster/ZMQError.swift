import CZMQ
import Foundation

/// Why a ZeroMQ operation failed. `reason` is libzmq's own text (zmq_strerror).
public enum ZMQError: LocalizedError, CustomStringConvertible, Sendable, Equatable {
    /// A libzmq call failed; `detail` names what it was applied to (an endpoint, an option).
    case failed(operation: String, detail: String, code: Int32, reason: String)
    /// The operation did not complete within its timeout.
    case timedOut(operation: String)
    /// A ROUTER send named a peer that is not (or no longer) connected.
    case hostUnreachable(peer: String)
    /// The context was shut down (``ZMQContext/shutdown()``); the socket must be closed.
    case contextTerminated
    /// The socket was closed with ``ZMQSocket/close()``.
    case closed
    /// A security handshake with the peer at `endpoint` failed (refused key, CURVE on one
    /// side only); libzmq keeps retrying, so a waiting caller should give up.
    case handshakeFailed(endpoint: String, reason: String)
    /// The call does not fit the socket type (e.g. a routing id given to a DEALER).
    case misuse(String)

    public var errorDescription: String? {
        switch self {
        case .failed(let op, let detail, let code, let reason):
            return "\(op)(\(detail)) failed: \(reason) (errno \(code))."
        case .timedOut(let op):
            return "\(op) timed out."
        case .hostUnreachable(let peer):
            return "peer \(peer) is not connected (it may have exited or not registered yet)."
        case .contextTerminated:
            return "the ZeroMQ context is shutting down."
        case .closed:
            return "the socket is closed."
        case .handshakeFailed(let endpoint, let reason):
            return "authentication with \(endpoint) failed: \(reason)."
        case .misuse(let what):
            return "socket misuse: \(what)."
        }
    }

    /// The same text as errorDescription, for printers that use String(describing:).
    public var description: String { errorDescription ?? "ZeroMQ error" }

    /// The error for the current zmq_errno() of a failed call.
    static func last(_ operation: String, _ detail: String = "") -> ZMQError {
        from(code: zmq_errno(), operation, detail)
    }

    static func from(code: Int32, _ operation: String, _ detail: String = "") -> ZMQError {
        if code == czmq_eterm() { return .contextTerminated }
        return .failed(operation: operation, detail: detail, code: code, reason: String(cString: zmq_strerror(code)))
    }
}
