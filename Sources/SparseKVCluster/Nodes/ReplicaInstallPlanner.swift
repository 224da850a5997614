/// Decides, without I/O, how a failover puts the dead workers' KV back from kept
/// replicas: for every segment a dead worker held, the live holder of its acked replica
/// sends each piece to whoever serves those layers in the new plan (itself included).
/// nil when the session cannot resume from replicas and must be recomputed: a segment
/// without an acked copy holding at least the prompt, a holder that died too, or layers
/// of a dead segment that no one serves.
public enum ReplicaInstallPlanner {
    /// One kept copy of a worker's segment for a session.
    public struct Copy: Equatable, Sendable {
        public let source: String
        public let holder: String
        public let layers: Range<Int>
        /// Tokens of the full copy the holder acked (nil until acked).
        public var tokens: Int?

        public init(source: String, holder: String, layers: Range<Int>, tokens: Int? = nil) {
            self.source = source
            self.holder = holder
            self.layers = layers
            self.tokens = tokens
        }
    }

    /// A piece of a replica to install: `holder` sends `layers` to `to` (itself, or a peer).
    public struct Move: Equatable, Sendable {
        public let holder: String
        public let layers: Range<Int>
        public let to: String
    }

    /// - Parameters:
    ///   - lost: each dead worker's segments.
    ///   - copies: the session's kept copies.
    ///   - pipeline: the new plan's workers and layers, in pipeline order.
    ///   - alive: the live workers.
    ///   - promptTokens: a copy must hold at least these (it was made after the prompt).
    public static func moves(lost: [String: [Range<Int>]], copies: [Copy], pipeline: [(id: String, layers: Range<Int>)],
                             alive: Set<String>, promptTokens: Int) -> [Move]? {
        var moves: [Move] = []
        for dead in lost.keys.sorted() {
            for segment in lost[dead] ?? [] {
                guard let copy = copies.first(where: { $0.source == dead && $0.layers == segment }),
                      let tokens = copy.tokens, tokens >= promptTokens, alive.contains(copy.holder)
                else { return nil }
                let pieces = pipeline.compactMap { w -> Move? in
                    let piece = segment.clamped(to: w.layers)
                    return piece.isEmpty ? nil : Move(holder: copy.holder, layers: piece, to: w.id)
                }
                guard pieces.reduce(0, { $0 + $1.layers.count }) == segment.count else { return nil }
                moves += pieces
            }
        }
        return moves.isEmpty ? nil : moves
    }
}
