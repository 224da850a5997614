extension Coordinator {
    /// Shows a newly sampled token to ``tokenTap``; turns the next step into the end of
    /// the session when the tap says so.
    func tapped(_ action: GenerationSession.Action, _ r: Request, generatedBefore: Int) -> GenerationSession.Action {
        guard let tap = tokenTap, r.session.generated.count > generatedBefore, let token = r.session.generated.last else { return action }
        let keepGoing = tap(r.client, r.requestID, token)
        if !keepGoing, case .send = action { return .finish(stopReason: "cancelled") }
        return action
    }

    /// Worker ids in registration order (for the HTTP API's readiness and metrics; call
    /// on the coordinator's thread, e.g. from `run`'s onReady).
    public var workerIDs: [String] { workers.map(\.id) }
}

extension Coordinator {
    /// The CSR dictionary's content hash, or "" without a csr: cache.
    public var dictionaryHash: String { dictionary?.hash ?? "" }
}
