// The prefill -> decode handoff, the core's side: which sessions move their KV, and from
// whom to whom. Both pipelines have one layer split (see the plan), so each prefill worker
// sends its KV to its decode counterpart; the loop parks the session's states, sends the
// kvRequests, waits for the acks and then decodes on pipeline 1 (Coordinator+Transfers.swift).

extension CoordinatorCore {
    /// One prefill worker's KV for its layers, to its decode counterpart.
    public struct HandoffMove: Equatable, Sendable {
        public let from: String
        public let to: String
        public let layers: Range<Int>
    }

    /// Whether a session on `pipeline` whose next states are `phase` moves its KV first:
    /// its prompt is in and it still sits on the prefill pipeline.
    public func handsOff(pipeline: Int, phase: ActivationsBody.Phase) -> Bool {
        settings.prefillWorkers > 0 && pipeline == 0 && phase == .decode
    }

    /// The handoff's moves, one per prefill worker, in layer order.
    public var handoffMoves: [HandoffMove] {
        zip(pipeline(0), pipeline(1)).compactMap { p, d in
            workers[p].layers.map { HandoffMove(from: workers[p].id, to: workers[d].id, layers: $0) }
        }
    }
}
