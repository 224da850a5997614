import Foundation
import SparseKVEngine

// Failover, the sessions' side. CoordinatorCore decides who is dead, who takes the dead
// worker's layers and when the new plan serves; this file pauses every live session at
// the death (their KV on the dead worker is gone) and, once the plan serves, rebuilds
// each one: from kept replicas where the core allows (CoordinatorCore+Sessions.swift), else
// by replaying its prompt and generated tokens exactly as the first time
// (GenerationSession.restart), so the tokens that follow are the ones an uninterrupted
// run gives.

extension Coordinator {
    /// A failover began: every live session stops where it is until the plan serves.
    func pauseSessions() {
        let now = ContinuousClock.now
        for sid in active.keys {
            active[sid]?.recovering = true
            active[sid]?.parked = nil
            active[sid]?.inFlight = false
            if active[sid]?.pausedSince == nil { active[sid]?.pausedSince = now }
            if active[sid]?.stalledSince == nil { active[sid]?.stalledSince = active[sid]?.lastStep }
        }
    }

    /// Every pipeline worker serves its new layers: the sessions rebuild their KV.
    func rebuildSessions(lost: [String], milliseconds elapsed: UInt64) {
        let sessions = active.keys.sorted().filter { active[$0]?.recovering == true }
        logger.warning("failover of \(lost.joined(separator: ", ")) done in \(elapsed) ms; rebuilding \(sessions.count) session(s) on the new plan")
        for id in sessions {
            guard let r = active[id] else { continue }
            carry(core.rebuild(session: id, generatedTokens: r.session.generated.count, now: .now))
        }
        startWaiting()
    }

    /// Puts a paused session back on the pipeline with `action` (a rebuild or a resume from
    /// replicas), under a new request id; the core asks for its replicas again on the new plan.
    func resumeSession(_ id: UInt64, _ action: (inout GenerationSession) throws -> GenerationSession.Action) {
        guard var q = active[id] else { return }
        q.recovering = false
        q.wireID = takeControlID()
        q.recoveryStarted = .now
        do {
            let next = try action(&q.session)
            active[id] = q
            try perform(next, sessionID: id)
        } catch {
            active[id] = q
            fail(id, code: .internalError, message: "could not rebuild the session after the failover: \(error.localizedDescription)")
        }
    }

    /// A session's replay reached the token where it stopped: it generates again.
    func sessionRecovered(_ id: UInt64) {
        guard let r = active[id], let started = r.recoveryStarted, !r.session.isReplaying else { return }
        active[id]?.recoveryStarted = nil
        active[id]?.stalledSince = nil
        let replay = milliseconds(.now - started)
        let pause = r.stalledSince.map { milliseconds(.now - $0) } ?? replay
        if let q = r.resumedAt {
            let fed = r.session.prompt.count + r.session.generated.count - 1 - q
            logger.warning("session \(id) generates again: resumed from replicas at token \(q), \(fed) token(s) fed again in \(replay) ms, no prompt recompute; paused \(pause) ms since the last token before the death")
        } else {
            logger.warning("session \(id) generates again: \(r.session.prompt.count) prompt and \(r.session.generated.count) generated tokens recomputed in \(replay) ms; paused \(pause) ms since the last token before the death")
        }
    }

    /// The cluster cannot serve any more: every session and waiting request fails with `why`.
    func failEverything(_ why: String) {
        for id in active.keys.sorted() { fail(id, code: .unreachable, message: why) }
        failWaiting(why)
    }

    func milliseconds(_ d: Duration) -> UInt64 { CoordinatorCore.milliseconds(d) }
}
