/// Options applied when a ``ZMQSocket`` is created. Defaults suit the cluster protocol.
public struct ZMQSocketOptions: Sendable, Equatable {
    /// How long close() keeps trying to deliver queued messages (ZMQ_LINGER). Default
    /// 1 s: a final reply still goes out, and a dead peer never blocks exit for long.
    public var linger: Duration = .seconds(1)
    /// This socket's identity as seen by a ROUTER peer (ZMQ_ROUTING_ID), 1...255 bytes;
    /// workers use their worker id. nil: libzmq picks one.
    public var routingID: [UInt8]?
    /// Largest inbound frame (ZMQ_MAXMSGSIZE); a peer sending more is disconnected by
    /// libzmq. Default: the protocol's limit.
    public var maxMessageBytes: Int = WireProtocol.maxMessageBytes
    /// Messages queued per peer before sends block or fail (ZMQ_SNDHWM); libzmq default.
    public var sendHighWaterMark: Int = 1000
    /// Messages queued per peer on receipt (ZMQ_RCVHWM); libzmq default.
    public var receiveHighWaterMark: Int = 1000
    /// ROUTER only (ZMQ_ROUTER_MANDATORY): a send to an unknown routing id fails with
    /// ``ZMQError/hostUnreachable(peer:)`` instead of being dropped silently.
    public var routerMandatory = true
    /// CURVE authentication and encryption (see ``ZMQCurve``); nil: plaintext.
    public var curve: ZMQCurve?

    public init() {}
}
