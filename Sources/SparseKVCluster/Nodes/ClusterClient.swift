import Foundation

/// A client of the coordinator: sends generate requests and waits for the replies. One
/// DEALER connected to the coordinator's ROUTER; one request at a time. Every wait has a
/// deadline, and a raised `stop` (a signal) ends it within a tenth of a second.
public final class ClusterClient {
    public let counters = ByteCounters()
    private let context: ZMQContext
    private let socket: CountedSocket
    private let stop: StopSignal?
    private var nextRequestID: UInt64 = 1

    /// - Parameter stop: raised (e.g. on SIGTERM), it ends any wait with ``NodeError/interrupted(waitingFor:)``.
    /// - Parameter security: under CURVE, `coordinator` ends in `#<its public key>` (as the
    ///   coordinator prints it) or the security names the server key; a refused key ends
    ///   a request with ``ZMQError/handshakeFailed(endpoint:reason:)``.
    public init(coordinator: String, stop: StopSignal? = nil, security: NodeSecurity = .insecure) throws {
        context = try ZMQContext()
        var options = ZMQSocketOptions()
        options.linger = .milliseconds(100)
        socket = try CountedSocket(context: context, kind: .dealer, counters: counters, peerLabel: coordinatorPeerID,
                                   options: security.client(options))
        try socket.watchHandshakes()
        try socket.connect(coordinator)
        self.stop = stop
    }

    deinit { socket.close() }

    /// How long one slice of a wait lasts before `stop` is looked at again.
    private static let slice: Duration = .milliseconds(100)

    /// Sends a request and returns the coordinator's answer to it (replies to other
    /// request ids are skipped).
    /// - Throws: ``NodeError/refused(by:code:message:)`` when the coordinator answers with
    ///   an error, ``NodeError/timedOut(waitingFor:peer:)`` after `timeout`.
    public func request(_ body: WireBody, timeout: Duration = .seconds(600)) throws -> WireMessage {
        let id = nextRequestID
        nextRequestID += 1
        // Sending waits while the coordinator is not connected yet.
        let connectBy = ContinuousClock.now + .seconds(10)
        while true {
            if stop?.isRaised == true { throw NodeError.interrupted(waitingFor: "the coordinator to take \(body.kind)") }
            try socket.checkHandshakes()
            do {
                try socket.send(WireMessage(body, requestID: id), timeout: Self.slice)
                break
            } catch ZMQError.timedOut where ContinuousClock.now < connectBy {
                continue
            } catch ZMQError.timedOut {
                throw NodeError.timedOut(waitingFor: "a connection to send \(body.kind)", peer: coordinatorPeerID)
            }
        }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if stop?.isRaised == true { throw NodeError.interrupted(waitingFor: "the answer to \(body.kind)") }
            try socket.checkHandshakes()
            guard let received = try socket.receive(timeout: min(Self.slice, deadline - .now)) else { continue }
            guard case .success(let m) = received.result, m.requestID == id else { continue }
            if case .error(let e) = m.body { throw NodeError.refused(by: coordinatorPeerID, code: e.code, message: e.message) }
            return m
        }
        throw NodeError.timedOut(waitingFor: "the answer to \(body.kind)", peer: coordinatorPeerID)
    }

    /// Generates; see ``GenerateRequestBody``.
    public func generate(_ g: GenerateRequestBody, timeout: Duration = .seconds(600)) throws -> GenerateReplyBody {
        let m = try request(.generateRequest(g), timeout: timeout)
        guard case .generateReply(let reply) = m.body else {
            throw NodeError.refused(by: coordinatorPeerID, code: .unexpectedMessage, message: "answered \(m.kind) to a generate request")
        }
        return reply
    }

    /// Drains a worker; returns when its layers and sessions' KV have moved.
    public func drain(_ d: DrainRequestBody, timeout: Duration = .seconds(600)) throws -> DrainReplyBody {
        let m = try request(.drainRequest(d), timeout: timeout)
        guard case .drainReply(let reply) = m.body else {
            throw NodeError.refused(by: coordinatorPeerID, code: .unexpectedMessage, message: "answered \(m.kind) to a drain request")
        }
        return reply
    }

    /// The coordinator's byte counters.
    public func stats(timeout: Duration = .seconds(10)) throws -> StatsReplyBody {
        let m = try request(.statsRequest, timeout: timeout)
        guard case .statsReply(let s) = m.body else {
            throw NodeError.refused(by: coordinatorPeerID, code: .unexpectedMessage, message: "answered \(m.kind) to a stats request")
        }
        return s
    }
}
