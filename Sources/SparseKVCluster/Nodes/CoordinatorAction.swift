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

    /// Ask `from` to send a session's KV for `layers` to `to` (a kvRequest for the drain).
    case drainTransfer(session: UInt64, from: String, to: String, layers: Range<Int>, encoding: String, mode: KVTransferMode)
    /// Forget the drain's pending KV requests (the drain ended early).
    case cancelDrainTransfers
    /// Send the states parked by the drain (it finished, or gave up before any layer moved).
    case resumeParked
    /// Fail the sessions whose states are parked (their KV may be half moved).
    case failParked(String)
    /// The pipeline changed: every session asks for its replicas again at its next step.
    case resetReplicas

    // MARK: - Failover

    /// A failover began: every live session stops where it is (its KV on the dead
    /// worker is gone) until ``rebuildSessions(lost:milliseconds:)``.
    case pauseSessions
    /// Forget the replica installs in progress (a new death re-plans them).
    case cancelInstalls
    /// The failover's plan serves: rebuild the paused sessions, from replicas where
    /// ``CoordinatorCore/replicaInstall(session:copies:promptTokens:)`` allows.
    case rebuildSessions(lost: [String], milliseconds: UInt64)
    /// The cluster cannot serve any more: fail every session and waiting request with this.
    case giveUp(String)
}
