/// Bytes and messages sent and received. Bytes are whole wire messages (header + body,
/// the single data frame); ZMTP framing and TCP/IP headers are not counted.
public struct TrafficCount: Sendable, Equatable, Codable {
    public var sentBytes: UInt64 = 0
    public var sentMessages: UInt64 = 0
    public var receivedBytes: UInt64 = 0
    public var receivedMessages: UInt64 = 0

    public init(sentBytes: UInt64 = 0, sentMessages: UInt64 = 0, receivedBytes: UInt64 = 0, receivedMessages: UInt64 = 0) {
        self.sentBytes = sentBytes
        self.sentMessages = sentMessages
        self.receivedBytes = receivedBytes
        self.receivedMessages = receivedMessages
    }

    public static func + (a: TrafficCount, b: TrafficCount) -> TrafficCount {
        TrafficCount(sentBytes: a.sentBytes &+ b.sentBytes, sentMessages: a.sentMessages &+ b.sentMessages,
                     receivedBytes: a.receivedBytes &+ b.receivedBytes,
                     receivedMessages: a.receivedMessages &+ b.receivedMessages)
    }

    public static func += (a: inout TrafficCount, b: TrafficCount) { a = a + b }
}
