import Foundation
import SparseKVEngine

// KV moves the coordinator drives: draining a worker (its layers and every live session's
// KV go to its pipeline neighbours) and the prefill -> decode handoff. Both pause the
// sessions concerned between two steps (their next states are parked), ask the worker that
// holds the KV to send it (kvRequest), wait for the receivers' acks, then resume. A
// measured baseline (the same KV in dense fp16) goes in a second wave, after the real
// move, so the two never share a link at the same time and each is timed alone.

extension Coordinator {
    /// What a KV transfer is for: a drain's move, a handoff, a kept replica (its full
    /// copy), or a failover installing a replica on a dead worker's successor.
    enum TransferPurpose: Equatable { case drain, handoff, replica, failover }

    /// A kvRequest sent and not yet acknowledged.
    struct PendingTransfer {
        let sessionID: UInt64
        let layers: Range<Int>
        let destination: String
        let encoding: String
        let mode: KVTransferMode
        let purpose: TransferPurpose
        let started: ContinuousClock.Instant
    }

    struct DrainState {
        enum Step: Equatable {
            /// Parking sessions as their states come back.
            case waiting
            /// The receivers are loading their added layers; these have not reported yet.
            case loading(Set<String>)
            /// KV requests are out.
            case transferring
        }

        let client: [UInt8]
        let requestID: UInt64
        let request: DrainRequestBody
        /// The drained worker's layers.
        let layers: Range<Int>
        /// Layers each receiving worker serves once the drain is done.
        let newLayers: [String: Range<Int>]
        /// Pieces of `layers` (each within one of the drained worker's segments) and who takes them.
        let moves: [(layers: Range<Int>, to: String)]
        var step = Step.waiting
        var sessions: [UInt64] = []
        var transfers: [DrainReplyBody.Transfer] = []
        /// When every live session was parked (the move starts).
        var paused = ContinuousClock.now
        var deadline = ContinuousClock.now
    }

    // MARK: - Drain

    func startDrain(_ d: DrainRequestBody, from received: ReceivedMessage, requestID: UInt64) {
        func refuse(_ code: WireErrorCode, _ why: String) {
            logger.warning("drain of \(d.workerID) refused: \(why)")
            answer(received, .error(ErrorBody(code: code, message: clip(why))), requestID: requestID)
        }
        guard phase == .serving, let client = received.routingID else { return refuse(.unexpectedMessage, "the cluster is not serving yet") }
        if let other = drain { return refuse(.unexpectedMessage, "a drain of \(other.request.workerID) is in progress") }
        guard configuration.prefillWorkers == 0 else {
            return refuse(.unexpectedMessage, "drain is not supported with --prefill-workers: the prefill and decode pipelines must keep matching layer splits")
        }
        guard let x = index(ofWorker: d.workerID) else {
            return refuse(.unexpectedMessage, "no worker named \(d.workerID); the workers are \(workers.map(\.id).joined(separator: ", "))")
        }
        guard let layers = workers[x].layers else { return refuse(.unexpectedMessage, "\(d.workerID) is a standby and holds no layers") }
        guard d.baseline.isEmpty || d.baseline == "fp16" || d.baseline == cacheKind else {
            return refuse(.unexpectedMessage, "baseline '\(d.baseline)': a transfer can be measured as 'fp16' or as the cache's own '\(cacheKind)'")
        }
        let line = pipeline(workers[x].pipeline)
        guard line.count >= 2 else { return refuse(.unexpectedMessage, "\(d.workerID) is the only worker; no one can take its layers") }
        let position = line.firstIndex(of: x)!
        let previous = position > 0 ? line[position - 1] : nil
        let next = position + 1 < line.count ? line[position + 1] : nil
        // The previous worker takes the first half (rounded up), the next one the rest; a
        // worker at either end of the pipeline hands everything to its one neighbour.
        let cut = previous == nil ? layers.lowerBound : next == nil ? layers.upperBound : layers.lowerBound + (layers.count + 1) / 2
        var moves: [(layers: Range<Int>, to: String)] = []
        var newLayers: [String: Range<Int>] = [:]
        for (neighbour, part) in [(previous, layers.lowerBound..<cut), (next, cut..<layers.upperBound)] {
            guard let n = neighbour, !part.isEmpty, let held = workers[n].layers else { continue }
            for segment in workers[x].segments {
                let piece = segment.clamped(to: part)
                if !piece.isEmpty { moves.append((piece, workers[n].id)) }
            }
            let grown = min(held.lowerBound, part.lowerBound)..<max(held.upperBound, part.upperBound)
            let need = UInt64(grown.count) * bytesPerLayer + UInt64(dictionary?.gguf.count ?? 0)
            guard need <= workers[n].budget else {
                return refuse(.outOfMemory, "\(workers[n].id) would serve layers \(grown.lowerBound)..<\(grown.upperBound), which need \(need) bytes; its budget is \(workers[n].budget)")
            }
            newLayers[workers[n].id] = grown
        }
        drain = DrainState(client: client, requestID: requestID, request: d, layers: layers, newLayers: newLayers, moves: moves)
        logger.info("drain of \(d.workerID) (layers \(layers.lowerBound)..<\(layers.upperBound)): \(moves.map { "\($0.layers.lowerBound)..<\($0.layers.upperBound) to \($0.to)" }.joined(separator: ", ")); pausing sessions")
        advanceDrain()
    }

    /// Whether a session's next states wait for the drain.
    func drainHolds(_ r: Request) -> Bool {
        guard let d = drain else { return false }
        return d.step != .waiting || r.session.generated.count >= d.request.minGenerated
    }

    /// Once every live session is parked, the receivers load their added layers.
    func advanceDrain() {
        guard var d = drain, d.step == .waiting, active.values.allSatisfy({ $0.parked != nil }) else { return }
        guard let x = index(ofWorker: d.request.workerID) else { return failDrain("the worker is gone") }
        d.sessions = active.keys.sorted()
        d.paused = .now
        d.step = .loading(Set(d.newLayers.keys))
        d.deadline = .now + configuration.stepTimeout
        drain = d
        logger.info("drain of \(d.request.workerID): \(d.sessions.count) session(s) paused; neighbours loading their added layers")
        for (id, layers) in d.newLayers {
            guard let i = index(ofWorker: id) else { continue }
            sendToWorker(i, WireMessage(.shardAssignment(assignment(for: i, layers: layers, without: x))))
        }
    }

    func drainAwaitsReady(from id: String) -> Bool {
        if case .loading(let waiting)? = drain?.step { return waiting.contains(id) }
        return false
    }

    func drainWorkerReady(_ id: String, layers: Range<Int>) {
        guard var d = drain, case .loading(var waiting) = d.step else { return }
        guard layers == d.newLayers[id] else {
            return failDrain("\(id) reported layers \(layers.lowerBound)..<\(layers.upperBound), expected \(String(describing: d.newLayers[id]))")
        }
        waiting.remove(id)
        d.step = waiting.isEmpty ? .transferring : .loading(waiting)
        drain = d
        guard waiting.isEmpty else { return }
        guard let x = index(ofWorker: d.request.workerID) else { return failDrain("the worker is gone") }
        for session in d.sessions {
            for move in d.moves {
                requestTransfer(session: session, from: x, to: move.to, layers: move.layers, encoding: cacheKind, mode: .install, purpose: .drain)
            }
        }
        drainWaveDone()
    }

    /// After the moves, the baseline wave (if asked for); after that, the end.
    private func drainWaveDone() {
        guard let d = drain, !pendingTransfers.values.contains(where: { $0.purpose == .drain }) else { return }
        let measured = d.transfers.contains { $0.mode == .measure }
        guard !d.request.baseline.isEmpty, !measured, !d.sessions.isEmpty,
              let x = index(ofWorker: d.request.workerID)
        else { return finishDrain() }
        for session in d.sessions {
            for move in d.moves {
                requestTransfer(session: session, from: x, to: move.to, layers: move.layers, encoding: d.request.baseline,
                                mode: .measure, purpose: .drain)
            }
        }
    }

    /// All KV is over: the receivers serve the drained layers, the drained worker goes,
    /// the client gets the transfers, and the sessions resume.
    func finishDrain() {
        guard let d = drain, let x = index(ofWorker: d.request.workerID) else { return }
        for (id, layers) in d.newLayers {
            guard let i = index(ofWorker: id) else { continue }
            let pieces = d.moves.filter { $0.to == id }.map(\.layers)
            workers[i].segments = (workers[i].segments + pieces).sorted { $0.lowerBound < $1.lowerBound }
            workers[i].layers = layers
        }
        sendToWorker(x, WireMessage(.shutdown(reason: "drained: layers \(d.layers.lowerBound)..<\(d.layers.upperBound) moved to \(d.newLayers.keys.sorted().joined(separator: ", "))")))
        let gone = workers.remove(at: x)
        monitor.remove(gone.id)
        gone.link?.close()
        drain = nil
        let elapsed = nanoseconds(.now - d.paused)
        let reply = DrainReplyBody(workerID: gone.id, layers: d.layers, nanoseconds: elapsed, sessionCount: d.sessions.count,
                                   transfers: d.transfers)
        sendToClient(d.client, WireMessage(.drainReply(reply), requestID: d.requestID))
        let moved = d.transfers.filter { $0.mode == .install }.reduce(UInt64(0)) { $0 + $1.wireBytes }
        logger.info("drained \(gone.id) in \(elapsed / 1_000_000) ms: \(d.sessions.count) session(s), \(moved) bytes of KV moved; pipeline now \(workers.map { "\($0.id) \($0.layers!.lowerBound)..<\($0.layers!.upperBound)" }.joined(separator: ", "))")
        // The pipeline changed: each session asks for its replicas again at its next step.
        for id in active.keys {
            active[id]?.replicated = false
            active[id]?.replicas = []
        }
        resumeParked()
        startWaiting()
    }

    /// Gives up a drain. Before any layer moved, the paused sessions simply go on. After,
    /// the receivers are put back to their old layers (a reload) and the paused sessions
    /// fail, since their KV may be half moved.
    func failDrain(_ why: String) {
        guard let d = drain else { return }
        drain = nil
        pendingTransfers = pendingTransfers.filter { $0.value.purpose != .drain }
        logger.error("drain of \(d.request.workerID) failed: \(why)")
        sendToClient(d.client, WireMessage(.error(ErrorBody(code: .internalError, message: clip("drain of \(d.request.workerID) failed: \(why)"))),
                                           requestID: d.requestID))
        if d.step == .waiting {
            resumeParked()
        } else {
            for id in d.newLayers.keys {
                if let i = index(ofWorker: id) { sendToWorker(i, WireMessage(.shardAssignment(assignment(for: i)))) }
            }
            for id in active.keys.sorted() where active[id]?.parked != nil {
                fail(id, code: .internalError, message: "the drain of \(d.request.workerID) failed while its KV moved: \(why)")
            }
        }
        startWaiting()
    }

    func checkDrainDeadline() {
        if let d = drain, d.step != .waiting, d.deadline < .now {
            failDrain("not done within \(configuration.stepTimeout)")
        }
    }

    private func resumeParked() {
        for id in active.keys.sorted() {
            guard let states = active[id]?.parked else { continue }
            do { try send(states, sessionID: id) } catch {
                fail(id, code: .unreachable, message: "could not resume after the drain: \(error.localizedDescription)")
            }
        }
    }

    // MARK: - Prefill -> decode handoff

    func shouldHandOff(_ r: Request, _ states: ActivationsBody) -> Bool {
        configuration.prefillWorkers > 0 && r.pipeline == 0 && states.phase == .decode
    }

    /// The prompt is in: each prefill worker sends its KV to its decode counterpart.
    func startHandoff(_ session: UInt64) {
        guard var r = active[session] else { return }
        r.handoffStarted = .now
        active[session] = r
        for (p, d) in zip(pipeline(0), pipeline(1)) {
            requestTransfer(session: session, from: p, to: workers[d].id, layers: workers[p].layers!, encoding: cacheKind,
                            mode: .install, purpose: .handoff)
        }
    }

    /// The moves are in: time them, then send the baseline wave or start decoding.
    private func handoffWaveDone(_ session: UInt64, mode: KVTransferMode) {
        guard var r = active[session], let started = r.handoffStarted else { return }
        let elapsed = nanoseconds(.now - started)
        if mode == .install {
            r.transferNanoseconds += elapsed
        } else {
            r.baselineNanoseconds += elapsed
        }
        r.handoffStarted = .now
        active[session] = r
        if mode == .install, !configuration.handoffBaseline.isEmpty {
            for (p, d) in zip(pipeline(0), pipeline(1)) {
                requestTransfer(session: session, from: p, to: workers[d].id, layers: workers[p].layers!,
                                encoding: configuration.handoffBaseline, mode: .measure, purpose: .handoff)
            }
        } else {
            finishHandoff(session)
        }
    }

    private func finishHandoff(_ session: UInt64) {
        guard var r = active[session], let states = r.parked else { return }
        r.pipeline = 1
        r.handoffStarted = nil
        active[session] = r
        for p in pipeline(0) { sendToWorker(p, WireMessage(.dropSession, sessionID: session)) }
        logger.info("session \(session): KV handed from the prefill to the decode workers, \(r.transferBytes) bytes")
        do { try send(states, sessionID: session) } catch {
            fail(session, code: .unreachable, message: "could not start decoding after the handoff: \(error.localizedDescription)")
        }
    }

    // MARK: - Requests and acks

    func requestTransfer(session: UInt64, from source: Int, to destination: String, layers: Range<Int>, encoding: String,
                                 mode: KVTransferMode, purpose: TransferPurpose) {
        guard let target = workers.first(where: { $0.id == destination }) else { return }
        let id = nextControlID
        nextControlID += 1
        pendingTransfers[id] = PendingTransfer(sessionID: session, layers: layers, destination: destination, encoding: encoding,
                                               mode: mode, purpose: purpose, started: .now)
        sendToWorker(source, WireMessage(.kvRequest(KVRequestBody(layers: layers, destination: target.endpoint, encoding: encoding, mode: mode)),
                                         requestID: id, sessionID: session))
    }

    func transferAcknowledged(_ ack: KVTransferAckBody, message m: WireMessage, from received: ReceivedMessage) {
        guard let t = pendingTransfers[m.requestID] else {
            logger.debug("ack for request \(m.requestID) from \(received.peer), not a pending transfer")
            return
        }
        guard received.peer == t.destination, ack.layers == t.layers, ack.mode == t.mode, m.sessionID == t.sessionID else {
            return transferFailed(requestID: m.requestID, message: "\(received.peer) acknowledged layers \(ack.layers) (\(ack.mode)) of session \(m.sessionID); expected \(t.destination), \(t.layers) (\(t.mode)) of session \(t.sessionID)")
        }
        pendingTransfers[m.requestID] = nil
        switch t.purpose {
        case .drain:
            drain?.transfers.append(DrainReplyBody.Transfer(
                sessionID: t.sessionID, layers: t.layers, destination: t.destination, encoding: t.encoding, mode: t.mode,
                tokenCount: ack.tokenCount, payloadBytes: ack.payloadBytes, wireBytes: ack.wireBytes,
                nanoseconds: nanoseconds(.now - t.started)))
            if t.mode == .install { active[t.sessionID]?.transferBytes += ack.wireBytes }
            drainWaveDone()
        case .handoff:
            if t.mode == .install {
                active[t.sessionID]?.transferBytes += ack.wireBytes
            } else {
                active[t.sessionID]?.baselineBytes += ack.wireBytes
            }
            if !pendingTransfers.values.contains(where: { $0.sessionID == t.sessionID && $0.purpose == .handoff }) {
                handoffWaveDone(t.sessionID, mode: t.mode)
            }
        case .replica:
            replicaAcknowledged(t, tokens: ack.tokenCount, wireBytes: ack.wireBytes)
        case .failover:
            replicaInstalled(t, tokens: ack.tokenCount)
        }
    }

    func transferFailed(requestID: UInt64, message: String) {
        guard let t = pendingTransfers.removeValue(forKey: requestID) else { return }
        switch t.purpose {
        case .drain: failDrain("moving session \(t.sessionID) layers \(t.layers.lowerBound)..<\(t.layers.upperBound) to \(t.destination): \(message)")
        case .handoff: fail(t.sessionID, code: .internalError, message: "handoff of layers \(t.layers.lowerBound)..<\(t.layers.upperBound): \(message)")
        case .replica: replicaFailed(t, message: message)
        case .failover: replicaInstallFailed(t, message: message)
        }
    }
}
