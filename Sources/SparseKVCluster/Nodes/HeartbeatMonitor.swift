/// The coordinator's liveness decisions, free of I/O: which workers to ping now and which
/// to declare dead. Events (a worker added, anything heard from it, a tick of the clock)
/// return actions; the serving loop sends the pings and runs the failover.
///
/// A worker counts as alive while something from it (a pong on its heartbeat socket, or
/// any other message) arrived within `liveness` intervals. Its first deadline starts when
/// it is added, so a worker that never answers is declared dead as well.
public struct HeartbeatMonitor: Sendable {
    /// Interval and liveness, as `--heartbeat-ms` and `--liveness` set them.
    public struct Settings: Sendable, Equatable {
        /// Time between two pings to one worker.
        public var interval: Duration = WireProtocol.heartbeatInterval
        /// Intervals of silence after which a worker counts as dead.
        public var liveness: Int = WireProtocol.heartbeatLiveness

        public init(interval: Duration = WireProtocol.heartbeatInterval, liveness: Int = WireProtocol.heartbeatLiveness) {
            self.interval = interval
            self.liveness = liveness
        }

        /// Silence after which a peer counts as dead.
        public var deadAfter: Duration { interval * liveness }
    }

    /// What the loop must do after a tick.
    public enum Action: Equatable, Sendable {
        /// Send ping(nonce) to the worker's heartbeat socket.
        case ping(worker: String, nonce: UInt64)
        /// Nothing was heard from the worker for `silence`: it is dead. The monitor forgets it.
        case lost(worker: String, silence: Duration)
    }

    private struct Peer {
        var lastHeard: ContinuousClock.Instant
        var nextPing: ContinuousClock.Instant
    }

    public let settings: Settings
    private var peers: [String: Peer] = [:]
    private var nextNonce: UInt64 = 1
    private var lastTick: ContinuousClock.Instant?

    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    /// The workers being watched.
    public var watched: Set<String> { Set(peers.keys) }

    /// Starts watching a worker (on registration); the first ping goes out at the next tick.
    public mutating func add(_ worker: String, now: ContinuousClock.Instant) {
        peers[worker] = Peer(lastHeard: now, nextPing: now)
    }

    /// Stops watching a worker (drained, shut down, or declared dead).
    public mutating func remove(_ worker: String) {
        peers[worker] = nil
    }

    /// Something arrived from the worker: it is alive now.
    public mutating func heard(_ worker: String, now: ContinuousClock.Instant) {
        peers[worker]?.lastHeard = now
    }

    /// Pings due and workers silent for too long, in name order (so runs repeat).
    ///
    /// A gap between two ticks longer than two intervals means the loop itself was held
    /// up (descheduled on a busy machine, a long step): it neither pinged nor read the
    /// pongs meanwhile, so that time does not count against the workers.
    public mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        if let last = lastTick, now - last > settings.interval * 2 {
            let held = now - last - settings.interval
            for id in peers.keys { peers[id]?.lastHeard += held }
        }
        lastTick = now
        var actions: [Action] = []
        for id in peers.keys.sorted() {
            guard var p = peers[id] else { continue }
            let silence = now - p.lastHeard
            if silence > settings.deadAfter {
                peers[id] = nil
                actions.append(.lost(worker: id, silence: silence))
                continue
            }
            if now >= p.nextPing {
                actions.append(.ping(worker: id, nonce: nextNonce))
                nextNonce &+= 1
                // Keep the cadence; after a late tick, start a new one from now.
                let planned = p.nextPing + settings.interval
                p.nextPing = planned > now ? planned : now + settings.interval
                peers[id] = p
            }
        }
        return actions
    }
}
