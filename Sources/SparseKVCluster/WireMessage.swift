/// One cluster message: the header's request and session ids plus a typed body. The kind
/// and flags of the header follow from the body. Layout: see WireProtocol.swift.
public struct WireMessage: Sendable, Equatable {
    /// Chosen by the requester and echoed by the reply, so replies can be matched.
    public var requestID: UInt64
    /// Non-zero for kinds that belong to a session (see ``MessageKind/sessionRule``), else 0.
    public var sessionID: UInt64
    public var body: WireBody

    public init(_ body: WireBody, requestID: UInt64 = 0, sessionID: UInt64 = 0) {
        self.body = body
        self.requestID = requestID
        self.sessionID = sessionID
    }

    public var kind: MessageKind { body.kind }

    /// The byte-accounting category of this message.
    public var category: TrafficCategory { kind.category }

    /// The message's bytes on the wire (one ZeroMQ frame).
    /// - Throws: ``WireError`` if a field breaks a rule a receiver would refuse.
    public func encode() throws -> [UInt8] { try WireProtocol.encode(self) }

    /// Decodes and checks one message.
    /// - Throws: ``WireError``; never traps, whatever the bytes.
    public static func decode(_ bytes: [UInt8]) throws -> WireMessage {
        try bytes.withUnsafeBytes { try WireProtocol.decode($0) }
    }
}
