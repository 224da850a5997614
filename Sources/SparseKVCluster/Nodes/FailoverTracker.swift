/// The course of a failover, free of I/O: which workers must still report their new
/// layers, when the sessions can be rebuilt, and when to give up. Events (a death with
/// its plan, a worker's report, a tick of the clock) return actions that the coordinator
/// carries out. A death during a failover merges into the one in progress: the dead
/// worker is no longer waited for, the new plan's workers are.
public struct FailoverTracker: Sendable {
    public enum Action: Equatable, Sendable {
        /// Send this worker its new assignment (these layers, and its next hop in the plan).
        case assign(worker: String, layers: Range<Int>)
        /// Every pipeline worker serves its new layers: rebuild the sessions.
        case rebuildSessions
        /// The failover cannot finish; the message says why.
        case giveUp(String)
    }

    /// Workers that died, in order.
    public private(set) var lost: [String] = []
    /// When the first death was declared.
    public let started: ContinuousClock.Instant
    public private(set) var deadline: ContinuousClock.Instant
    private let timeout: Duration
    /// Workers whose report of these layers is outstanding.
    public private(set) var waiting: [String: Range<Int>] = [:]
    public private(set) var isFinished = false

    public init(started: ContinuousClock.Instant, timeout: Duration) {
        self.started = started
        self.timeout = timeout
        deadline = started + timeout
    }

    /// A worker died and `plan` places its layers; `plan.assign` plus `reset` (workers to be
    /// put back on the plan, e.g. the receivers of an abandoned drain) get assignments.
    public mutating func workerLost(_ id: String, plan: FailoverPlanner.Plan, reset: [String] = [],
                                    now: ContinuousClock.Instant) -> [Action] {
        guard !isFinished else { return [] }
        lost.append(id)
        waiting[id] = nil
        deadline = now + timeout
        var actions: [Action] = []
        for worker in plan.assign + reset.filter({ !plan.assign.contains($0) }).sorted() {
            guard let layers = plan.pipeline.first(where: { $0.id == worker })?.layers else { continue }
            waiting[worker] = layers
            actions.append(.assign(worker: worker, layers: layers))
        }
        return actions + finishIfDone()
    }

    /// A worker reports the layers it serves. A report of an earlier plan's layers (the
    /// worker got two assignments) does not count.
    public mutating func ready(_ worker: String, layers: Range<Int>) -> [Action] {
        guard !isFinished, let expected = waiting[worker], expected == layers else { return [] }
        waiting[worker] = nil
        return finishIfDone()
    }

    /// Gives up once the deadline (the step timeout after the latest death) has passed.
    public mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        guard !isFinished, now > deadline else { return [] }
        isFinished = true
        let missing = waiting.keys.sorted().joined(separator: ", ")
        return [.giveUp("the failover of \(lost.joined(separator: ", ")) did not finish within \(timeout): no report from \(missing)")]
    }

    /// Whether `worker`'s report is outstanding.
    public func awaits(_ worker: String) -> Bool { waiting[worker] != nil }

    private mutating func finishIfDone() -> [Action] {
        guard waiting.isEmpty else { return [] }
        isFinished = true
        return [.rebuildSessions]
    }
}
