import Foundation
import Logging

/// The ZAP handler (ZeroMQ RFC 27) of one context: a thread with a REP socket bound to
/// `inproc://zeromq.zap.01`, which libzmq asks about every CURVE client connecting to a
/// server socket of that context. It accepts a client whose public key has a file in
/// `authorized` (one Z85 key per file, e.g. a copy of that node's key.pub) and refuses
/// (status 400) and logs every other. The directory is read on each request, so a key
/// copied in later counts from the next connection attempt.
///
/// Bind it before any server socket of the context binds: without a handler, libzmq lets
/// every CURVE client in.
public final class ZAPHandler: @unchecked Sendable {
    // @unchecked: `finished` is behind `lock`; the socket is used by the thread only.
    private let lock = NSLock()
    private var finished = false
    private let done = DispatchSemaphore(value: 0)
    private let socket: ZMQSocket
    public let authorizedDirectory: String
    private let logger: Logger

    public static let endpoint = "inproc://zeromq.zap.01"

    /// The node's own public key (raw bytes): its own sockets (the coordinator's HTTP
    /// bridge) connect with the node's key pair and are always accepted.
    private let ownKey: [UInt8]?

    public init(context: ZMQContext, authorizedDirectory: String, ownPublicKey: String? = nil, logger: Logger) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: authorizedDirectory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CurveKeyError.unreadable(authorizedDirectory, "no such directory")
        }
        var options = ZMQSocketOptions()
        options.linger = .zero
        socket = try ZMQSocket(context: context, kind: .rep, options: options)
        try socket.bind(Self.endpoint)
        self.authorizedDirectory = authorizedDirectory
        ownKey = ownPublicKey.flatMap { ZMQCurve.decode($0) }
        self.logger = logger
        Thread.detachNewThread { [self] in serve() }
    }

    private func serve() {
        defer {
            socket.close()
            done.signal()
        }
        while !lock.withLock({ finished }) {
            do {
                guard let request = try socket.receive(timeout: .milliseconds(100)) else { continue }
                try socket.send(answer(request), timeout: .seconds(1))
            } catch ZMQError.contextTerminated {
                return
            } catch {
                logger.warning("ZAP handler: \(error.localizedDescription)")
            }
        }
    }

    /// The reply frames to one ZAP request: version, request id, status code, status text,
    /// user id, metadata.
    func answer(_ f: [[UInt8]]) -> [[UInt8]] {
        func reply(_ code: String, _ text: String, user: String = "") -> [[UInt8]] {
            [Array("1.0".utf8), f.count > 1 ? f[1] : [], Array(code.utf8), Array(text.utf8), Array(user.utf8), []]
        }
        guard f.count >= 6, f[0] == Array("1.0".utf8) else { return reply("500", "malformed ZAP request") }
        let address = String(decoding: f[3], as: UTF8.self), mechanism = String(decoding: f[5], as: UTF8.self)
        guard mechanism == "CURVE", f.count >= 7, let key = ZMQCurve.encode(f[6]) else {
            logger.warning("refused a \(mechanism) connection from \(address): this node accepts only CURVE clients")
            return reply("400", "CURVE required")
        }
        guard isAuthorized(f[6]) else {
            logger.warning("refused CURVE key \(key) from \(address): not in \(authorizedDirectory)")
            return reply("400", "key not authorized")
        }
        logger.debug("accepted CURVE key \(key) from \(address)")
        return reply("200", "OK", user: key)
    }

    /// True when a file in the authorized directory holds this key.
    func isAuthorized(_ key: [UInt8]) -> Bool {
        if let ownKey, key == ownKey { return true }
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: authorizedDirectory) else {
            logger.error("cannot read \(authorizedDirectory); refusing every client")
            return false
        }
        for name in names where !name.hasPrefix(".") {
            if let k = try? CurveKeyPair.readKey(authorizedDirectory + "/" + name), ZMQCurve.decode(k) == key { return true }
        }
        return false
    }

    /// Ends the thread and waits for it (at most about a tenth of a second).
    public func stop() {
        let running = lock.withLock { () -> Bool in
            defer { finished = true }
            return !finished
        }
        if running { done.wait() }
    }

    deinit { stop() }
}
