import Foundation

/// Why a message could not be encoded or was refused on receipt. A refused message is an
/// error for that message only: the receiver logs it, may answer with an error message,
/// and keeps serving.
public enum WireError: LocalizedError, Sendable, Equatable {
    /// The first four bytes are not "SKVW": not a SparseKV cluster peer.
    case badMagic(UInt32)
    /// The peer speaks another protocol version.
    case unsupportedVersion(received: UInt16, supported: UInt16)
    /// The kind byte names no message kind of this version.
    case unknownKind(UInt8)
    /// The message ends inside `field` (`kind` is nil inside the header).
    case truncated(kind: MessageKind?, field: String)
    /// The header's body length differs from the bytes that follow it.
    case bodyLengthMismatch(kind: MessageKind, declared: Int, actual: Int)
    /// The message (or the size its header declares) is over the protocol limit.
    case messageTooLarge(bytes: Int, limit: Int)
    /// Bytes remain after the last field of the body.
    case trailingBytes(kind: MessageKind, count: Int)
    /// A length or count field is over its limit.
    case lengthOverLimit(kind: MessageKind, field: String, length: Int, limit: Int)
    /// Header flags not allowed for the kind.
    case invalidFlags(kind: MessageKind, flags: UInt8)
    /// A field's value breaks a rule of the protocol.
    case invalidField(kind: MessageKind, field: String, reason: String)
    /// A float field holds NaN or infinity at `index`.
    case nonFiniteValue(kind: MessageKind, field: String, index: Int)
    /// A received ZeroMQ message had another number of frames than the socket type expects.
    case unexpectedFrameCount(received: Int, expected: Int)

    public var errorDescription: String? {
        switch self {
        case .badMagic(let m):
            return "not a SparseKV cluster message (magic 0x\(String(m, radix: 16)), expected 0x\(String(WireProtocol.magic, radix: 16))); check that the endpoint belongs to a SparseKV process."
        case .unsupportedVersion(let got, let ours):
            return "peer speaks wire protocol version \(got), this build speaks \(ours); run the same SparseKV version on every node."
        case .unknownKind(let k):
            return "unknown message kind 0x\(String(k, radix: 16)) for protocol version \(WireProtocol.version)."
        case .truncated(let kind, let field):
            return "\(kind.map { "\($0) message" } ?? "message header") ends inside \(field)."
        case .bodyLengthMismatch(let kind, let declared, let actual):
            return "\(kind) message declares a \(declared)-byte body but \(actual) bytes follow the header."
        case .messageTooLarge(let n, let limit):
            return "message of \(n) bytes is over the \(limit)-byte limit; send large KV transfers in layer ranges."
        case .trailingBytes(let kind, let n):
            return "\(kind) message has \(n) bytes after its last field."
        case .lengthOverLimit(let kind, let field, let n, let limit):
            return "\(kind) message: \(field) is \(n), over the limit of \(limit)."
        case .invalidFlags(let kind, let flags):
            return "\(kind) message has flags 0x\(String(flags, radix: 16)), which this kind does not allow."
        case .invalidField(let kind, let field, let reason):
            return "\(kind) message: \(field): \(reason)."
        case .nonFiniteValue(let kind, let field, let i):
            return "\(kind) message: \(field) holds a NaN or infinity at index \(i); the sender's computation diverged."
        case .unexpectedFrameCount(let n, let expected):
            return "received \(n) ZeroMQ frames, expected \(expected); the peer is not speaking this protocol."
        }
    }
}
