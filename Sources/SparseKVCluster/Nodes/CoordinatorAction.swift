import Logging

/// What the coordinator's socket loop must do after an event of ``CoordinatorCore``, in
/// order. Workers are named by id; the loop holds their links and routing ids.
public enum CoordinatorAction: Equatable, Sendable {
    /// Answer the peer whose message caused the event (over the ROUTER).
    case answer(WireBody)
    /// Send a message to a client (over the ROUTER).
    case sendToClient(client: [UInt8], WireMessage)
    /// Open the link (a DEALER) to a worker of the shard plan; failing to is fatal at startup.
    case connect(worker: String)
    /// Open the link to a standby; if that fails, the loop reports ``CoordinatorCore/standbyUnreachable(_:)``
    /// and skips the rest of the batch.
    case connectStandby(worker: String)
    /// Close a worker's link (nil linger: the socket's default).
    case disconnect(worker: String, linger: Duration?)
    /// Send a message to a worker (over its link, or the ROUTER while it has none).
    case send(worker: String, WireMessage)
    /// Send the cluster's dictionary to a worker.
    case sendDictionary(worker: String)
    /// Send ping(nonce) to the worker's heartbeat socket.
    case ping(worker: String, nonce: UInt64)
    case log(Logger.Level, String)
    /// Every worker is loaded (and acked the dictionary): the cluster serves.
    case serving
    /// The coordinator cannot go on starting: it stops with this error.
    case abort(NodeError)

    // MARK: - Drain

    /// Send the states parked by the drain (it finished, or gave up before any layer moved).
    case resumeParked
    /// Fail the sessions whose states are parked (their KV may be half moved).
    case failParked(String)

    // MARK: - Sessions

    /// End a session with this error to its client.
    case failSession(UInt64, code: WireErrorCode, message: String)
    /// A session's KV is on the decode workers: it decodes on pipeline 1 from its parked states.
    case finishHandoff(UInt64)

    // MARK: - Failover

    /// A failover began: every live session stops where it is (its KV on the dead
    /// worker is gone) until ``rebuildSessions(lost:milliseconds:)``.
    case pauseSessions
    /// The failover's plan serves: each paused session is rebuilt as
    /// ``CoordinatorCore/rebuild(session:generatedTokens:now:)`` decides.
    case rebuildSessions(lost: [String], milliseconds: UInt64)
    /// Put a paused session back on the pipeline from position `atToken`: its replicas
    /// are installed, so only the tokens from there on are fed again.
    case resumeSession(UInt64, atToken: Int)
    /// Put a paused session back on the pipeline by recomputing its prompt and tokens.
    case recomputeSession(UInt64)
    /// The cluster cannot serve any more: fail every session and waiting request with this.
    case giveUp(String)
}
