import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A TCP relay on 127.0.0.1 that forwards each connection to `127.0.0.1:upstreamPort` and
/// keeps a copy of every byte that passes, both ways: what an eavesdropper on the link
/// would read. Point a client at `tcp://127.0.0.1:<port>` instead of the server.
final class LoopbackRecorder: @unchecked Sendable {
    // @unchecked: `captured` and `connections` are behind `lock`.
    let port: Int
    private let listener: Int32
    private let lock = NSLock()
    private var captured: [UInt8] = []
    private var connections: [Int32] = []

    init(upstreamPort: Int) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError(description: "socket() failed: errno \(errno)") }
        var addr = Self.loopback(port: 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound, listen(fd, 16) == 0 else {
            close(fd)
            throw HarnessError(description: "cannot listen on 127.0.0.1: errno \(errno)")
        }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        Thread.detachNewThread { [self] in acceptLoop(upstreamPort: upstreamPort) }
    }

    /// Every byte relayed so far, both directions interleaved as read.
    var bytes: [UInt8] { lock.withLock { captured } }

    /// True when `needle` occurs in the captured bytes.
    func saw(_ needle: String) -> Bool {
        let n = Array(needle.utf8), h = bytes
        guard !n.isEmpty, h.count >= n.count else { return false }
        return (0...(h.count - n.count)).contains { i in h[i..<(i + n.count)].elementsEqual(n) }
    }

    /// Stops accepting and cuts every relayed connection.
    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        for fd in lock.withLock({ connections }) { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    deinit { close(listener) }

    private static func loopback(port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        return a
    }

    private func acceptLoop(upstreamPort: Int) {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = Self.loopback(port: upstreamPort)
            let ok = server >= 0 && withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard ok else {
                close(client)
                if server >= 0 { close(server) }
                continue
            }
            lock.withLock { connections += [client, server] }
            let group = DispatchGroup()
            for (from, to) in [(client, server), (server, client)] {
                group.enter()
                Thread.detachNewThread { [self] in
                    pump(from: from, to: to)
                    group.leave()
                }
            }
            group.notify(queue: .global()) {
                close(client)
                close(server)
            }
        }
    }

    private func pump(from: Int32, to: Int32) {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        copying: while true {
            let n = read(from, &buffer, buffer.count)
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            lock.withLock { captured += buffer[0..<n] }
            var done = 0
            while done < n {
                let w = buffer.withUnsafeBytes { write(to, $0.baseAddress! + done, n - done) }
                if w < 0, errno == EINTR { continue }
                guard w > 0 else { break copying }
                done += w
            }
        }
        shutdown(to, Int32(SHUT_RDWR))
        shutdown(from, Int32(SHUT_RDWR))
    }
}
