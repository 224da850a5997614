/// What the coordinator's core knows of each running session, free of I/O: its kept
/// replicas, the replica installs of a failover, its prefill -> decode handoff, and the
/// KV transfers (kvRequests) sent for it and not yet acknowledged. The session itself
/// (GenerationSession, with the model) stays with the socket loop; the decisions about
/// it live in CoordinatorCore+Sessions.swift.
public struct SessionTable: Sendable {
    /// What a KV transfer is for: a drain's move, a handoff, a kept replica (its full
    /// copy), or a failover installing a replica on a dead worker's successor.
    public enum Purpose: Equatable, Sendable { case drain, handoff, replica, failover }

    /// A kvRequest sent and not yet acknowledged.
    public struct Transfer: Equatable, Sendable {
        public let sessionID: UInt64
        /// The worker asked to send.
        public let source: String
        public let layers: Range<Int>
        public let destination: String
        public let encoding: String
        public let mode: KVTransferMode
        public let purpose: Purpose
        public let started: ContinuousClock.Instant
    }

    /// A failover's replica installs for one session.
    public struct Install: Equatable, Sendable {
        /// Installs not yet acked.
        public var pending: Int
        /// The fewest tokens an acked install holds.
        public var tokens: Int?
        /// The last position any worker may hold (prompt + generated - 1): where the
        /// session resumes at the latest.
        public let fed: Int
        /// Past this, the session is recomputed.
        public let deadline: ContinuousClock.Instant
    }

    public struct Entry: Equatable, Sendable {
        public let promptTokens: Int
        /// Kept replicas of the session's KV, requested once per plan at its first decode step.
        public var replicas: [ReplicaInstallPlanner.Copy] = []
        public var replicated = false
        /// When the states in flight must be back; nil while none are (parked by a drain
        /// or a handoff, paused by a failover).
        public var stepDeadline: ContinuousClock.Instant?
        public var install: Install?
        /// When the running handoff wave started.
        public var handoffStarted: ContinuousClock.Instant?
        /// KV moved for the session (handoff, drain) and the measured baseline of a handoff.
        public var transferBytes: UInt64 = 0
        public var transferNanoseconds: UInt64 = 0
        public var baselineBytes: UInt64 = 0
        public var baselineNanoseconds: UInt64 = 0
    }

    public internal(set) var entries: [UInt64: Entry] = [:]
    /// kvRequests sent and not yet acknowledged, by their request id.
    public internal(set) var transfers: [UInt64: Transfer] = [:]
    /// Request ids of control messages (transfers, a session's activations); far above
    /// any client's ids.
    var nextRequestID: UInt64 = 1 << 48

    public subscript(id: UInt64) -> Entry? { entries[id] }

    mutating func takeRequestID() -> UInt64 {
        defer { nextRequestID += 1 }
        return nextRequestID
    }

    /// Forgets the transfers matching `drop`.
    mutating func forgetTransfers(where drop: (Transfer) -> Bool) {
        transfers = transfers.filter { !drop($0.value) }
    }

    /// Whether a transfer of `purpose` for `session` is still out.
    func awaits(_ session: UInt64, _ purpose: Purpose) -> Bool {
        transfers.values.contains { $0.sessionID == session && $0.purpose == purpose }
    }
}
