/// Client -> coordinator: move worker `workerID`'s layers and every live session's KV for
/// them to its pipeline neighbours, then let the worker go. Sessions pause for the move
/// and go on generating afterwards.
public struct DrainRequestBody: Sendable, Equatable {
    public var workerID: String
    /// Also send each moved KV range in this encoding (e.g. "fp16") as a measured baseline
    /// the receiver checks and discards; empty for none.
    public var baseline: String
    /// Start once every live session has generated at least this many tokens (0: at once).
    public var minGenerated: Int

    public init(workerID: String, baseline: String = "", minGenerated: Int = 0) {
        self.workerID = workerID
        self.baseline = baseline
        self.minGenerated = minGenerated
    }
}
