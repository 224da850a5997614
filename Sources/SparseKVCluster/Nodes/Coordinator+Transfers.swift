import Foundation
import SparseKVEngine

// KV moves the coordinator drives, the sessions' side: draining a worker (its layers and
// every live session's KV go to its pipeline neighbours) and the prefill -> decode
// handoff. Both pause the sessions concerned between two steps (their next states are
// parked); the core (CoordinatorCore+Drain.swift, +Handoff.swift, +Sessions.swift) asks
// the worker that holds the KV to send it, counts the receivers' acks and times the
// waves, then has this file resume the sessions. A measured baseline (the same KV in
// dense fp16) goes in a second wave, after the real move, so the two never share a link
// at the same time and each is timed alone.

extension Coordinator {
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

    /// The session's KV is on the decode workers: the prefill workers drop it and the
    /// parked states go to pipeline 1.
    func finishHandoff(_ session: UInt64) {
        guard var r = active[session], let states = r.parked else { return }
        r.pipeline = 1
        active[session] = r
        for p in pipeline(0) { sendToWorker(p, WireMessage(.dropSession, sessionID: session)) }
        do { try send(states, sessionID: session) } catch {
            fail(session, code: .unreachable, message: "could not start decoding after the handoff: \(error.localizedDescription)")
        }
    }
}
