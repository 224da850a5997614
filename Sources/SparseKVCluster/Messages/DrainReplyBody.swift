/// Coordinator -> client: a drain is complete; what moved where, in how many bytes and how long.
public struct DrainReplyBody: Sendable, Equatable {
    /// One KV transfer of the drain, timed by the coordinator from its request to the ack.
    public struct Transfer: Sendable, Equatable {
        public var sessionID: UInt64
        public var layers: Range<Int>
        /// The receiving worker's id.
        public var destination: String
        public var encoding: String
        public var mode: KVTransferMode
        public var tokenCount: Int
        public var payloadBytes: UInt64
        /// The kvTransfer message as the receiver's socket counted it.
        public var wireBytes: UInt64
        public var nanoseconds: UInt64

        public init(sessionID: UInt64, layers: Range<Int>, destination: String, encoding: String, mode: KVTransferMode,
                    tokenCount: Int, payloadBytes: UInt64, wireBytes: UInt64, nanoseconds: UInt64) {
            self.sessionID = sessionID
            self.layers = layers
            self.destination = destination
            self.encoding = encoding
            self.mode = mode
            self.tokenCount = tokenCount
            self.payloadBytes = payloadBytes
            self.wireBytes = wireBytes
            self.nanoseconds = nanoseconds
        }
    }

    public var workerID: String
    /// The layers the worker served.
    public var layers: Range<Int>
    /// From the start of the drain (sessions paused) to its end (sessions resumed).
    public var nanoseconds: UInt64
    /// Sessions whose KV moved.
    public var sessionCount: Int
    public var transfers: [Transfer]

    public init(workerID: String, layers: Range<Int>, nanoseconds: UInt64, sessionCount: Int, transfers: [Transfer]) {
        self.workerID = workerID
        self.layers = layers
        self.nanoseconds = nanoseconds
        self.sessionCount = sessionCount
        self.transfers = transfers
    }
}
