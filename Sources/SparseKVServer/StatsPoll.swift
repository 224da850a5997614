/// When ``ClusterBackend``'s bridge asks the coordinator for its stats, free of I/O: every
/// `interval`, or at once when a scrape waits; one request in flight at a time, given up
/// after `timeout` (its late answer is then ignored).
struct StatsPoll {
    let interval: Duration
    let timeout: Duration
    /// Stats request ids; generate requests count up from 1, so the two never meet.
    private var nextID: UInt64 = 1 << 62
    private var inFlight: (id: UInt64, since: ContinuousClock.Instant)?
    private var lastSent: ContinuousClock.Instant?

    init(interval: Duration = ClusterBackend.statsInterval, timeout: Duration = .seconds(2)) {
        self.interval = interval
        self.timeout = timeout
    }

    /// The id of a stats request to send now, or nil.
    mutating func due(now: ContinuousClock.Instant, wanted: Bool) -> UInt64? {
        guard inFlight == nil else { return nil }
        if !wanted, let lastSent, now - lastSent < interval { return nil }
        let id = nextID
        nextID += 1
        inFlight = (id, now)
        lastSent = now
        return id
    }

    /// The request `due` gave could not be sent.
    mutating func unsent() { inFlight = nil }

    /// Whether a stats reply with this request id answers the request in flight.
    mutating func answered(_ id: UInt64) -> Bool {
        guard inFlight?.id == id else { return false }
        inFlight = nil
        return true
    }

    /// Whether the request in flight just timed out (the scrapes waiting for it go on without it).
    mutating func expired(now: ContinuousClock.Instant) -> Bool {
        guard let f = inFlight, now - f.since > timeout else { return false }
        inFlight = nil
        return true
    }
}
