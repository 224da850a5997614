import Foundation

/// A client of the coordinator: sends generate requests and waits for the replies. One
/// DEALER connected to the coordinator's ROUTER; one request at a time.
public final class ClusterClient {
    public let counters = ByteCounters()
    private let context: ZMQContext
    private let socket: CountedSocket
    private var nextRequestID: UInt64 = 1

    public init(coordinator: String) throws {
        context = try ZMQContext()
        socket = try CountedSocket(context: context, kind: .dealer, counters: counters, peerLabel: coordinatorPeerID)
        try socket.connect(coordinator)
    }

    deinit { socket.close() }

    /// Sends a request and returns the coordinator's answer to it (replies to other
    /// request ids are skipped).
    /// - Throws: ``NodeError/refused(by:code:message:)`` when the coordinator answers with
    ///   an error, ``NodeError/timedOut(waitingFor:peer:)`` after `timeout`.
    public func request(_ body: WireBody, timeout: Duration = .seconds(600)) throws -> WireMessage {
        let id = nextRequestID
        nextRequestID += 1
        try socket.send(WireMessage(body, requestID: id), timeout: .seconds(10))
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let received = try socket.receive(timeout: min(.seconds(1), deadline - .now)) else { continue }
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
