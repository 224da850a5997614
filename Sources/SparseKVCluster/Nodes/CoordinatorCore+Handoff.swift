// The prefill -> decode handoff, the core's side: which sessions move their KV, from
// whom to whom, and when. Both pipelines have one layer split (see the plan), so each
// prefill worker sends its KV to its decode counterpart. The loop parks the session's
// states; the core asks for the moves (one wave), counts the acks and times the wave,
// then, with a measured baseline, asks for the same KV in the baseline's encoding (a
// second wave, timed alone); then the loop decodes on pipeline 1.

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

    /// A session's prompt is in (its states are parked): its KV moves to the decode workers.
    public mutating func startHandoff(_ session: UInt64, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard sessions.entries[session] != nil else { return [] }
        sessions.entries[session]?.handoffStarted = now
        return handoffWave(session, encoding: settings.cacheKind, mode: .install, now: now)
    }

    private mutating func handoffWave(_ session: UInt64, encoding: String, mode: KVTransferMode, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        let wave = handoffMoves.compactMap {
            requestTransfer(session: session, from: $0.from, to: $0.to, layers: $0.layers, encoding: encoding, mode: mode, purpose: .handoff, now: now)
        }
        return wave.isEmpty ? handoffWaveDone(session, mode: mode, now: now) : wave
    }

    /// A handoff transfer was acked: its bytes count; the wave's last one ends the wave.
    mutating func handoffAcked(_ t: SessionTable.Transfer, wireBytes: UInt64, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        if t.mode == .install {
            sessions.entries[t.sessionID]?.transferBytes += wireBytes
        } else {
            sessions.entries[t.sessionID]?.baselineBytes += wireBytes
        }
        guard !sessions.awaits(t.sessionID, .handoff) else { return [] }
        return handoffWaveDone(t.sessionID, mode: t.mode, now: now)
    }

    /// The wave is in: time it, then send the baseline wave or start decoding.
    private mutating func handoffWaveDone(_ session: UInt64, mode: KVTransferMode, now: ContinuousClock.Instant) -> [CoordinatorAction] {
        guard var e = sessions.entries[session], let started = e.handoffStarted else { return [] }
        let elapsed = Self.nanoseconds(now - started)
        if mode == .install {
            e.transferNanoseconds += elapsed
        } else {
            e.baselineNanoseconds += elapsed
        }
        let baseline = mode == .install && !settings.handoffBaseline.isEmpty
        e.handoffStarted = baseline ? now : nil
        sessions.entries[session] = e
        if baseline { return handoffWave(session, encoding: settings.handoffBaseline, mode: .measure, now: now) }
        return [.log(.info, "session \(session): KV handed from the prefill to the decode workers, \(e.transferBytes) bytes"),
                .finishHandoff(session)]
    }
}
