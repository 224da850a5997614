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
    /// only fails for a malformed endpoint or an unknown transport.
    public func connect(_ endpoint: String) throws {
        let h = try open()
        guard zmq_connect(h, endpoint) == 0 else { throw ZMQError.last("zmq_connect", endpoint) }
    }

    public func disconnect(_ endpoint: String) throws {
        let h = try open()
        guard zmq_disconnect(h, endpoint) == 0 else { throw ZMQError.last("zmq_disconnect", endpoint) }
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

    /// Sets a binary option such as ZMQ_ROUTING_ID.
    public func setOption(_ option: Int32, bytes: [UInt8], _ name: String) throws {
        let h = try open()
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(h, option, $0.baseAddress, $0.count) }
        guard rc == 0 else { throw ZMQError.last("zmq_setsockopt", name) }
    }

    /// Closes the socket (queued messages get the linger time); later calls throw
    /// ``ZMQError/closed``. Idempotent.
    public func close() {
        guard let h = handle else { return }
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
