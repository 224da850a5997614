// Token streaming to clients, cancels, and the stats a serving client reads
// (`sparsekv serve --cluster`, `coordinator --http`). See the generateToken and
// generateCancel kinds in WireProtocol.swift.

extension Coordinator {
    /// Sends a newly sampled token to a client that asked for streaming (generateToken,
    /// the request's id); turns the next step into the end of the session when the client
    /// cancelled the request.
    func tapped(_ action: GenerationSession.Action, _ r: Request, generatedBefore: Int) -> GenerationSession.Action {
        // A failover's replay feeds known tokens again without sampling: nothing new to send.
        if r.streamTokens, r.session.generated.count > generatedBefore, let token = r.session.generated.last {
            sendToClient(r.client, WireMessage(.generateToken(token), requestID: r.requestID))
        }
        if r.cancelRequested, case .send = action { return .finish(stopReason: "cancelled") }
        return action
    }

    /// A client's generateCancel: a running session ends at its next step (stop reason
    /// "cancelled", its reply as usual); a waiting one is answered at once with no tokens.
    func cancel(from received: ReceivedMessage, requestID: UInt64) {
        guard let client = received.routingID else { return }
        if let id = active.first(where: { $0.value.client == client && $0.value.requestID == requestID })?.key {
            active[id]?.cancelRequested = true
            logger.info("session \(id): cancelled by \(received.peer)")
        } else if let i = waiting.firstIndex(where: { $0.client == client && $0.requestID == requestID }) {
            let r = waiting.remove(at: i)
            sendToClient(client, WireMessage(.generateReply(GenerateReplyBody(
                promptTokens: r.session.prompt, generatedTokens: [], text: "", prefillNanoseconds: 0, decodeNanoseconds: 0,
                stopReason: "cancelled", kvCache: cacheKind, kvCacheBytes: 0)), requestID: requestID))
        }
    }

    /// The answer to a stats request: byte counters, the sessions' KV bytes, and the
    /// cluster's state with every worker's readiness, liveness and KV bytes.
    func statsReply() -> StatsReplyBody {
        var byWorker: [String: UInt64] = [:]
        for r in active.values {
            for e in r.kvBytesByWorker { byWorker[e.worker, default: 0] += e.bytes }
        }
        let watched = core.watched
        let status = ClusterStatus(
            serving: core.phase == .serving && core.broken == nil, contextLength: contextLength, kvSpec: configuration.kvSpec,
            dictionaryHash: dictionary?.hash ?? "",
            workers: workers.map {
                WorkerStatus(worker: $0.id, ready: core.isReady($0),
                             alive: watched.contains($0.id), kvBytes: byWorker[$0.id] ?? 0)
            })
        let kv = active.values.reduce(UInt64(0)) { $0 + $1.kvBytes }
        return StatsReplyBody(traffic: counters.snapshot(), kvCacheBytes: kv, sessionCount: active.count, cluster: status)
    }
}
