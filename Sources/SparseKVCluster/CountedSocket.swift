import Foundation

/// A ZeroMQ socket that speaks only ``WireMessage``s and counts every one of them, sent
/// or received, in ``ByteCounters`` under its category and peer. The raw socket is not
/// exposed, so nothing sent through it escapes the counters.
///
/// Frames: one data frame per message; a ROUTER adds the routing-id frame, which is local
/// addressing and not counted. Peers are labelled by routing id on a ROUTER (workers set
/// theirs to their worker id) and by `peerLabel` on every other socket type, which talks
/// to one logical peer. Suggested layout: every process binds one ROUTER; every outgoing
/// link is a DEALER whose routing id is the process's own id, so both ends of a link
/// know each other by name.
///
/// Thread rules: as ``ZMQSocket`` (one thread or task at a time); the counters may be
/// shared.
public final class CountedSocket {
    public let kind: ZMQSocket.Kind
    public let counters: ByteCounters
    /// Label of the peer for non-ROUTER sockets.
    public let peerLabel: String
    private let socket: ZMQSocket

    /// - Parameters:
    ///   - peerLabel: how the counters name the other end of a non-ROUTER socket, e.g.
    ///     "coordinator" or the next worker's id.
    ///   - options: socket options; a worker puts its id into `routingID`.
    public init(context: ZMQContext, kind: ZMQSocket.Kind, counters: ByteCounters, peerLabel: String = "peer",
                options: ZMQSocketOptions = ZMQSocketOptions()) throws {
        guard !peerLabel.isEmpty, peerLabel.utf8.count <= WireProtocol.maxPeerLabelLength else {
            throw ZMQError.misuse("peer label must have 1...\(WireProtocol.maxPeerLabelLength) bytes")
        }
        socket = try ZMQSocket(context: context, kind: kind, options: options)
        self.kind = kind
        self.counters = counters
        self.peerLabel = peerLabel
    }

    /// Binds; returns the endpoint bound (with the port chosen for `tcp://HOST:*`).
    @discardableResult
    public func bind(_ endpoint: String) throws -> String { try socket.bind(endpoint) }

    public func connect(_ endpoint: String) throws { try socket.connect(endpoint) }

    public func disconnect(_ endpoint: String) throws { try socket.disconnect(endpoint) }

    /// See ``ZMQSocket/watchHandshakes()``.
    public func watchHandshakes() throws { try socket.watchHandshakes() }

    /// See ``ZMQSocket/checkHandshakes()``.
    public func checkHandshakes() throws { try socket.checkHandshakes() }

    public func close() { socket.close() }

    /// Closes with a new linger time (see ``ZMQSocket/close(linger:)``).
    public func close(linger: Duration) { socket.close(linger: linger) }

    // MARK: - Send

    /// Encodes, sends and counts a message.
    /// - Parameters:
    ///   - routingID: ROUTER only, and required there: the peer to send to.
    ///   - timeout: see ``ZMQSocket/send(_:timeout:)``.
    /// - Returns: the bytes counted.
    /// - Throws: ``WireError`` if the message breaks a protocol rule (nothing is sent),
    ///   ``ZMQError`` if the socket refuses it (nothing is counted).
    @discardableResult
    public func send(_ message: WireMessage, to routingID: [UInt8]? = nil, timeout: Duration? = nil) throws -> Int {
        let bytes = try message.encode()
        let peer: String
        switch (kind, routingID) {
        case (.router, let id?):
            try socket.send([id, bytes], timeout: timeout)
            peer = WireProtocol.peerLabel(routingID: id)
        case (.router, nil):
            throw ZMQError.misuse("a ROUTER send needs the peer's routing id")
        case (_, nil):
            try socket.send([bytes], timeout: timeout)
            peer = peerLabel
        case (_, .some):
            throw ZMQError.misuse("only a ROUTER send takes a routing id, this socket is \(kind)")
        }
        counters.recordSent(bytes: bytes.count, category: message.category, peer: peer)
        return bytes.count
    }

    // MARK: - Receive

    /// Receives, counts and decodes one message.
    /// - Returns: nil on timeout; otherwise the message or the reason it was refused.
    /// - Throws: only ``ZMQError`` (the socket failed), never for what a peer sent.
    public func receive(timeout: Duration? = nil) throws -> ReceivedMessage? {
        guard var frames = try socket.receive(timeout: timeout), !frames.isEmpty else { return nil }
        let routingID = kind == .router ? frames.removeFirst() : nil
        let peer = routingID.map(WireProtocol.peerLabel(routingID:)) ?? peerLabel
        guard frames.count == 1 else {
            let n = frames.reduce(0) { $0 + $1.count }
            counters.recordReceived(bytes: n, category: .control, peer: peer, rejected: true)
            let error = WireError.unexpectedFrameCount(received: frames.count + (routingID == nil ? 0 : 1),
                                                       expected: routingID == nil ? 1 : 2)
            return ReceivedMessage(routingID: routingID, peer: peer, wireBytes: n, header: nil, result: .failure(error))
        }
        let bytes = frames[0]
        let header = bytes.withUnsafeBytes { try? WireProtocol.decodeHeader($0) }
        let result: Result<WireMessage, WireError>
        do {
            result = .success(try bytes.withUnsafeBytes { try WireProtocol.decode($0) })
        } catch let e as WireError {
            result = .failure(e)
        } catch {
            result = .failure(.invalidField(kind: header?.kind ?? .error, field: "message", reason: "\(error)"))
        }
        let category = header?.kind.category ?? Self.categoryHint(bytes)
        let refused = if case .failure = result { true } else { false }
        counters.recordReceived(bytes: bytes.count, category: category, peer: peer, rejected: refused)
        return ReceivedMessage(routingID: routingID, peer: peer, wireBytes: bytes.count, header: header, result: result)
    }

    // MARK: - Categories

    /// Category of a message whose header did not pass: from its kind byte when the magic
    /// is ours and the kind known, else control.
    private static func categoryHint(_ bytes: [UInt8]) -> TrafficCategory {
        guard bytes.count >= 7 else { return .control }
        let magic = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
        guard magic == WireProtocol.magic, let kind = MessageKind(rawValue: bytes[6]) else { return .control }
        return kind.category
    }
}
