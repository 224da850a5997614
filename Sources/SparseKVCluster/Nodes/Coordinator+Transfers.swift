import Foundation
import SparseKVEngine

// KV moves the coordinator drives: draining a worker (its layers and every live session's
// KV go to its pipeline neighbours; CoordinatorCore+Drain.swift decides, this file parks
// and resumes the sessions) and the prefill -> decode handoff. Both pause the sessions
// concerned between two steps (their next states are parked), ask the worker that holds
// the KV to send it (kvRequest), wait for the receivers' acks, then resume. A measured
// baseline (the same KV in dense fp16) goes in a second wave, after the real move, so the
// two never share a link at the same time and each is timed alone.

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

    // MARK: - Drain

    /// Once every live session is parked, the core has the receivers load their added layers.
    func advanceDrain() {
        guard let d = core.drain, d.step == .waiting, active.values.allSatisfy({ $0.parked != nil }) else { return }
        carry(core.sessionsParked(active.keys.sorted(), now: .now))
    }

    /// Fails the sessions whose states wait for a drain that failed after KV moved.
    func failParked(_ why: String) {
        for id in active.keys.sorted() where active[id]?.parked != nil {
            fail(id, code: .internalError, message: why)
        }
        startWaiting()
    }

    /// The pipeline changed: each session asks for its replicas again at its next step.
    func resetReplicas() {
        for id in active.keys {
            active[id]?.replicated = false
            active[id]?.replicas = []
        }
    }

    func resumeParked() {
        for id in active.keys.sorted() {
            guard let states = active[id]?.parked else { continue }
            do { try send(states, sessionID: id) } catch {
                fail(id, code: .unreachable, message: "could not resume after the drain: \(error.localizedDescription)")
            }
        }
        startWaiting()
    }

    // MARK: - Prefill -> decode handoff

    func shouldHandOff(_ r: Request, _ states: ActivationsBody) -> Bool {
        core.handsOff(pipeline: r.pipeline, phase: states.phase)
    }

    /// The prompt is in: each prefill worker sends its KV to its decode counterpart.
    func startHandoff(_ session: UInt64) {
        guard var r = active[session] else { return }
        r.handoffStarted = .now
        active[session] = r
        for move in core.handoffMoves {
            guard let p = index(ofWorker: move.from) else { continue }
            requestTransfer(session: session, from: p, to: move.to, layers: move.layers, encoding: cacheKind, mode: .install, purpose: .handoff)
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
            for move in core.handoffMoves {
                guard let p = index(ofWorker: move.from) else { continue }
                requestTransfer(session: session, from: p, to: move.to, layers: move.layers,
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
            if t.mode == .install { active[t.sessionID]?.transferBytes += ack.wireBytes }
            let now = ContinuousClock.now
            carry(core.drainTransferAcked(DrainReplyBody.Transfer(
                sessionID: t.sessionID, layers: t.layers, destination: t.destination, encoding: t.encoding, mode: t.mode,
                tokenCount: ack.tokenCount, payloadBytes: ack.payloadBytes, wireBytes: ack.wireBytes,
                nanoseconds: nanoseconds(now - t.started)), now: now))
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
        case .drain: carry(core.failDrain("moving session \(t.sessionID) layers \(t.layers.lowerBound)..<\(t.layers.upperBound) to \(t.destination): \(message)"))
        case .handoff: fail(t.sessionID, code: .internalError, message: "handoff of layers \(t.layers.lowerBound)..<\(t.layers.upperBound): \(message)")
        case .replica: replicaFailed(t, message: message)
        case .failover: replicaInstallFailed(t, message: message)
        }
    }
}
