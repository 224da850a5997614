/// A copy of ``ByteCounters`` at one moment: traffic by peer and category, plus messages
/// received that could not be decoded. Codable for JSON reports; also the body of a stats
/// reply.
public struct TrafficSnapshot: Sendable, Equatable, Codable {
    /// Peer label (a worker id, "coordinator", or a hex routing id) -> its traffic.
    public var byPeer: [String: TrafficByCategory]
    /// Received messages refused by the decoder (only the received fields are used).
    /// Their bytes are also counted under their peer, in the category their header named
    /// (control when unreadable).
    public var rejected: TrafficCount

    public init(byPeer: [String: TrafficByCategory] = [:], rejected: TrafficCount = TrafficCount()) {
        self.byPeer = byPeer
        self.rejected = rejected
    }

    /// Traffic of all peers, by category.
    public var byCategory: TrafficByCategory { byPeer.values.reduce(TrafficByCategory(), +) }

    /// Traffic of all peers and categories.
    public var total: TrafficCount { byCategory.total }
}
