/// One message taken from a ``CountedSocket``: who sent it, its size on the wire, and the
/// decoded message or why it was refused. A refused message does not end a serving loop:
/// the loop can answer with an error message (using `header` when it was readable) and
/// go on to the next one.
public struct ReceivedMessage: Sendable {
    /// ROUTER sockets: the sender's routing id, to address the reply. nil otherwise.
    public let routingID: [UInt8]?
    /// The peer's label in the byte counters.
    public let peer: String
    /// Bytes counted for this message (its data frame; routing frames excluded).
    public let wireBytes: Int
    /// The header, when it passed its own checks (also for some refused messages).
    public let header: WireHeader?
    public private(set) var result: Result<WireMessage, WireError>

    public init(routingID: [UInt8]?, peer: String, wireBytes: Int, header: WireHeader?, result: Result<WireMessage, WireError>) {
        self.routingID = routingID
        self.peer = peer
        self.wireBytes = wireBytes
        self.header = header
        self.result = result
    }

    /// The decoded message, or the ``WireError`` that refused it.
    public func message() throws -> WireMessage { try result.get() }

    /// The result taken out: afterwards this value keeps who sent the message, its size and
    /// header, and its result says the message was taken. The caller's copy of the message is
    /// then the only one, so a large body (hidden states) can be changed in place rather than
    /// copied first.
    public mutating func takeResult() -> Result<WireMessage, WireError> {
        let taken = result
        result = .failure(.invalidField(kind: header?.kind ?? .error, field: "message", reason: "taken by the receiver"))
        return taken
    }
}
