import CZMQ
import Foundation

/// A libzmq socket: bind/connect, multipart send and receive with timeouts, close.
///
/// Thread rules: a libzmq socket is not thread-safe. Create, use and close it on one
/// thread (or one task at a time: moving it between threads is allowed by libzmq when the
/// move has a full memory barrier, which Swift concurrency's hand-offs provide). Hence the
/// type is deliberately not `Sendable`. To stop a thread blocked in ``receive(timeout:)``
/// from elsewhere, call ``ZMQContext/shutdown()``.
public final class ZMQSocket {
    /// libzmq socket types used by the cluster.
    public enum Kind: Sendable, CustomStringConvertible {
        case pair, req, rep, dealer, router, pull, push

        var raw: Int32 {
            switch self {
            case .pair: ZMQ_PAIR
            case .req: ZMQ_REQ
            case .rep: ZMQ_REP
            case .dealer: ZMQ_DEALER
            case .router: ZMQ_ROUTER
            case .pull: ZMQ_PULL
            case .push: ZMQ_PUSH
            }
        }

        public var description: String {
            switch self {
            case .pair: "PAIR"
            case .req: "REQ"
            case .rep: "REP"
            case .dealer: "DEALER"
            case .router: "ROUTER"
            case .pull: "PULL"
            case .push: "PUSH"
            }
        }
    }

    public let kind: Kind
    private let context: ZMQContext
    private var handle: UnsafeMutableRawPointer?
    /// The CURVE client's default server key, for endpoints without `#KEY`.
    private var curveClient: (keys: CurveKeyPair, serverKey: String?)?
    /// The PAIR socket receiving this socket's handshake events (``watchHandshakes()``).
    private var monitor: ZMQSocket?
    /// Reused for every received frame: zmq_msg_recv releases the previous content.
    private let frame: UnsafeMutablePointer<zmq_msg_t>

    public init(context: ZMQContext, kind: Kind, options: ZMQSocketOptions = ZMQSocketOptions()) throws {
        guard let h = zmq_socket(context.handle, kind.raw) else { throw ZMQError.last("zmq_socket", "\(kind)") }
        self.context = context
        self.kind = kind
        handle = h
        frame = .allocate(capacity: 1)
        zmq_msg_init(frame)
        do {
            try setOption(ZMQ_LINGER, Int32(clamping: Self.milliseconds(options.linger)), "ZMQ_LINGER")
            try setOption(ZMQ_MAXMSGSIZE, Int64(options.maxMessageBytes), "ZMQ_MAXMSGSIZE")
            try setOption(ZMQ_SNDHWM, Int32(clamping: options.sendHighWaterMark), "ZMQ_SNDHWM")
            try setOption(ZMQ_RCVHWM, Int32(clamping: options.receiveHighWaterMark), "ZMQ_RCVHWM")
            if let id = options.routingID {
                guard (1...255).contains(id.count) else { throw ZMQError.misuse("a routing id has 1...255 bytes, not \(id.count)") }
                try setOption(ZMQ_ROUTING_ID, bytes: id, "ZMQ_ROUTING_ID")
            }
            if kind == .router, options.routerMandatory {
                try setOption(ZMQ_ROUTER_MANDATORY, Int32(1), "ZMQ_ROUTER_MANDATORY")
            }
            switch options.curve {
            case nil: break
            case .server(let keys):
                try setCurveKeys(keys)
                try setOption(ZMQ_CURVE_SERVER, Int32(1), "ZMQ_CURVE_SERVER")
            case .client(let keys, let serverKey):
                try setCurveKeys(keys)
                curveClient = (keys, serverKey)
            }
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    // MARK: - Endpoints

    /// Binds and returns the endpoint actually bound (ZMQ_LAST_ENDPOINT), which tells the
    /// port chosen for `tcp://HOST:*`.
    @discardableResult
    public func bind(_ endpoint: String) throws -> String {
        let h = try open()
        guard zmq_bind(h, endpoint) == 0 else { throw ZMQError.last("zmq_bind", endpoint) }
        return try lastEndpoint()
    }

    /// Connects; libzmq connects in the background and reconnects after failures, so this
    /// only fails for a malformed endpoint or an unknown transport. An endpoint may end in
    /// `#<Z85 server public key>`: a CURVE client uses it as ZMQ_CURVE_SERVERKEY for this
    /// connection (libzmq copies options at connect), a plaintext socket ignores it.
    public func connect(_ endpoint: String) throws {
        let h = try open()
        let (address, key) = ZMQCurve.splitServerKey(endpoint)
        if let client = curveClient {
            guard let serverKey = key ?? client.serverKey else { throw CurveKeyError.noServerKey(address) }
            guard let bytes = ZMQCurve.decode(serverKey) else { throw CurveKeyError.malformedKey("the server key of \(address)", serverKey.count) }
            try setOption(ZMQ_CURVE_SERVERKEY, bytes: bytes, "ZMQ_CURVE_SERVERKEY")
        }
        guard zmq_connect(h, address) == 0 else { throw ZMQError.last("zmq_connect", address) }
    }

    public func disconnect(_ endpoint: String) throws {
        let h = try open()
        let address = ZMQCurve.splitServerKey(endpoint).endpoint
        guard zmq_disconnect(h, address) == 0 else { throw ZMQError.last("zmq_disconnect", address) }
    }

    // MARK: - Handshakes

    /// Starts watching this socket's security handshakes (zmq_socket_monitor to a PAIR in
    /// the same context), so that ``checkHandshakes()`` can tell a refused key from a peer
    /// that is merely slow. Call before connecting.
    public func watchHandshakes() throws {
        let h = try open()
        guard monitor == nil else { return }
        let address = "inproc://sparsekv-monitor-\(UUID().uuidString)"
        let events = ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
        guard zmq_socket_monitor(h, address, Int32(events)) == 0 else { throw ZMQError.last("zmq_socket_monitor", address) }
        let m = try ZMQSocket(context: context, kind: .pair)
        try m.connect(address)
        monitor = m
    }

    /// Throws ``ZMQError/handshakeFailed(endpoint:reason:)`` when a handshake failed since
    /// ``watchHandshakes()``; returns at once otherwise.
    public func checkHandshakes() throws {
        guard let m = monitor, let event = try m.receive(timeout: .zero), event.count >= 2, event[0].count >= 6 else { return }
        let id = UInt16(event[0][0]) | UInt16(event[0][1]) << 8
        let value = event[0][2...5].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let endpoint = String(decoding: event[1], as: UTF8.self)
        if Int32(id) == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH {
            throw ZMQError.handshakeFailed(endpoint: endpoint, reason: "the server refused this node's CURVE public key (ZAP status \(value)); add this node's key.pub to the server's authorized/ directory")
        }
        throw ZMQError.handshakeFailed(endpoint: endpoint, reason: Self.protocolFailure(value))
    }

    private static func protocolFailure(_ code: UInt32) -> String {
        switch Int32(bitPattern: code) {
        case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "one side uses CURVE and the other plaintext; give both --keys (or both --insecure)"
        case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "the CURVE handshake did not decrypt; check the server's public key"
        default:
            return "security handshake protocol error 0x\(String(code, radix: 16))"
        }
    }

    /// The last endpoint bound (ZMQ_LAST_ENDPOINT).
    public func lastEndpoint() throws -> String {
        let h = try open()
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        guard zmq_getsockopt(h, ZMQ_LAST_ENDPOINT, &buffer, &size) == 0 else {
            throw ZMQError.last("zmq_getsockopt", "ZMQ_LAST_ENDPOINT")
        }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - Send

    /// Sends one multipart message; libzmq delivers all frames or none.
    /// - Parameter timeout: how long to wait while the peer's queue is full (or, on a
    ///   DEALER/PUSH, while no peer is connected); nil waits indefinitely.
    /// - Throws: ``ZMQError/timedOut(operation:)``, ``ZMQError/hostUnreachable(peer:)``
    ///   on a ROUTER whose first frame names no connected peer, other ``ZMQError``s.
    public func send(_ frames: [[UInt8]], timeout: Duration? = nil) throws {
        let h = try open()
        guard !frames.isEmpty else { throw ZMQError.misuse("a message needs at least one frame") }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        // Set when a poll reported the socket writable: a ROUTER may report that while the
        // addressed peer's queue is full, and then a retry must not spin.
        var pollSaidWritable = false
        for (i, f) in frames.enumerated() {
            var flags: Int32 = i < frames.count - 1 ? ZMQ_SNDMORE : 0
            // Only the first frame can block: once it is queued, the rest are too.
            if i == 0, deadline != nil { flags |= ZMQ_DONTWAIT }
            while true {
                let rc = f.isEmpty ? zmq_send(h, nil, 0, flags) : f.withUnsafeBytes { zmq_send(h, $0.baseAddress, $0.count, flags) }
                if rc >= 0 { break }
                let e = zmq_errno()
                if e == EINTR { continue }
                if e == EHOSTUNREACH { throw ZMQError.hostUnreachable(peer: WireProtocol.peerLabel(routingID: frames[0])) }
                if e == EAGAIN, i == 0, let deadline {
                    let left = deadline - ContinuousClock.now
                    guard left > .zero else { throw ZMQError.timedOut(operation: "send on \(kind)") }
                    if pollSaidWritable { Thread.sleep(forTimeInterval: min(0.001, Double(Self.milliseconds(left)) / 1000)) }
                    pollSaidWritable = try poll(h, events: Int16(ZMQ_POLLOUT), timeout: left)
                    continue
                }
                throw ZMQError.from(code: e, "zmq_send", "\(kind)")
            }
        }
    }

    // MARK: - Receive

    /// Receives one multipart message.
    /// - Parameter timeout: nil waits indefinitely; `.zero` only takes what is queued.
    /// - Returns: the frames, or nil when nothing arrived within `timeout`.
    public func receive(timeout: Duration? = nil) throws -> [[UInt8]]? {
        let h = try open()
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            if let deadline {
                let left = deadline - ContinuousClock.now
                if try !poll(h, events: Int16(ZMQ_POLLIN), timeout: max(left, .zero)) {
                    if ContinuousClock.now >= deadline { return nil }
                    continue
                }
            }
            if zmq_msg_recv(frame, h, deadline == nil ? 0 : ZMQ_DONTWAIT) >= 0 { break }
            let e = zmq_errno()
            // EAGAIN after a positive poll is a spurious wake-up: poll again.
            if e == EINTR || (e == EAGAIN && deadline != nil) { continue }
            throw ZMQError.from(code: e, "zmq_msg_recv", "\(kind)")
        }
        var frames = [copyFrame()]
        // The remaining frames of a multipart message have already arrived with the first.
        while zmq_msg_more(frame) != 0 {
            while zmq_msg_recv(frame, h, 0) < 0 {
                let e = zmq_errno()
                if e != EINTR { throw ZMQError.from(code: e, "zmq_msg_recv", "\(kind)") }
            }
            frames.append(copyFrame())
        }
        return frames
    }

    private func copyFrame() -> [UInt8] {
        let n = zmq_msg_size(frame)
        guard n > 0, let p = zmq_msg_data(frame) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }

    /// Waits up to `timeout` for `events`; false when they did not occur. EINTR counts as
    /// "not yet": callers loop on their own deadline.
    private func poll(_ h: UnsafeMutableRawPointer, events: Int16, timeout: Duration) throws -> Bool {
        var item = zmq_pollitem_t(socket: h, fd: 0, events: events, revents: 0)
        let rc = zmq_poll(&item, 1, Int(Self.milliseconds(timeout)))
        if rc < 0 {
            let e = zmq_errno()
            if e == EINTR { return false }
            throw ZMQError.from(code: e, "zmq_poll", "\(kind)")
        }
        return rc > 0 && (item.revents & events) != 0
    }

    // MARK: - Options and lifetime

    /// Sets an integer option (Int32 or Int64 as the option requires).
    public func setOption<T: FixedWidthInteger>(_ option: Int32, _ value: T, _ name: String) throws {
        let h = try open()
        var v = value
        guard zmq_setsockopt(h, option, &v, MemoryLayout<T>.size) == 0 else {
            throw ZMQError.last("zmq_setsockopt", "\(name)=\(value)")
        }
    }

    /// The security mechanism in force (ZMQ_MECHANISM): "NULL" (plaintext) or "CURVE".
    public var mechanism: String {
        get throws {
            switch try intOption(ZMQ_MECHANISM, "ZMQ_MECHANISM") {
            case ZMQ_NULL: "NULL"
            case ZMQ_PLAIN: "PLAIN"
            case ZMQ_CURVE: "CURVE"
            case let m: "mechanism \(m)"
            }
        }
    }

    /// True when the socket is the server side of CURVE (ZMQ_CURVE_SERVER).
    public var isCurveServer: Bool { get throws { try intOption(ZMQ_CURVE_SERVER, "ZMQ_CURVE_SERVER") != 0 } }

    private func intOption(_ option: Int32, _ name: String) throws -> Int32 {
        let h = try open()
        var v: Int32 = 0
        var size = MemoryLayout<Int32>.size
        guard zmq_getsockopt(h, option, &v, &size) == 0 else { throw ZMQError.last("zmq_getsockopt", name) }
        return v
    }

    /// Sets a binary option such as ZMQ_ROUTING_ID.
    public func setOption(_ option: Int32, bytes: [UInt8], _ name: String) throws {
        let h = try open()
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(h, option, $0.baseAddress, $0.count) }
        guard rc == 0 else { throw ZMQError.last("zmq_setsockopt", name) }
    }

    private func setCurveKeys(_ keys: CurveKeyPair) throws {
        guard ZMQCurve.isAvailable else { throw CurveKeyError.curveUnavailable }
        guard let pub = ZMQCurve.decode(keys.publicKey), let sec = ZMQCurve.decode(keys.secretKey) else {
            throw CurveKeyError.malformedKey("the key pair", keys.publicKey.count)
        }
        try setOption(ZMQ_CURVE_PUBLICKEY, bytes: pub, "ZMQ_CURVE_PUBLICKEY")
        try setOption(ZMQ_CURVE_SECRETKEY, bytes: sec, "ZMQ_CURVE_SECRETKEY")
    }

    /// Closes the socket (queued messages get the linger time); later calls throw
    /// ``ZMQError/closed``. Idempotent.
    public func close() {
        guard let h = handle else { return }
        monitor?.close(linger: .zero)
        monitor = nil
        handle = nil
        zmq_close(h)
        zmq_msg_close(frame)
        frame.deallocate()
    }

    /// Closes the socket with a new linger time: at shutdown, what a dead peer did not
    /// take must not hold the process for the default linger.
    public func close(linger: Duration) {
        if handle != nil { try? setOption(ZMQ_LINGER, Int32(clamping: Self.milliseconds(linger)), "ZMQ_LINGER") }
        close()
    }

    public var isClosed: Bool { handle == nil }

    private func open() throws -> UnsafeMutableRawPointer {
        guard let h = handle else { throw ZMQError.closed }
        return h
    }

    /// Whole milliseconds, rounded up, so a short timeout never becomes a zero wait.
    static func milliseconds(_ d: Duration) -> Int64 {
        let (s, atto) = d.components
        guard s >= 0, atto >= 0 else { return 0 }
        guard s < Int64.max / 1000 - 1 else { return Int64.max / 2 }
        return s * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000
    }
}
