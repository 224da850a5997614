/// A ZeroMQ endpoint this project accepts: `tcp://HOST:PORT`, `ipc://PATH` or
/// `inproc://NAME`. HOST and PORT may be `*` to bind (a wildcard is never something a peer
/// can connect to, so the wire protocol refuses it wherever a peer must connect).
/// A CURVE server's endpoint ends in `#<Z85 public key>` (40 characters), which its
/// clients need to connect; the key travels wherever the endpoint does.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public enum Transport: String, Sendable {
        case tcp, ipc, inproc
    }

    public let transport: Transport
    /// Everything after "://".
    public let address: String
    /// tcp only: the host part (name, IPv4, bracketed IPv6, or `*`).
    public let host: String?
    /// tcp only: the port, or nil for `*` (an ephemeral port chosen at bind).
    public let port: Int?
    /// The server's CURVE public key (Z85), from a `#KEY` suffix; nil for plaintext.
    public let serverKey: String?

    /// Longest ipc path (sockaddr_un.sun_path holds 108 bytes with the terminating NUL).
    public static let maxIPCPathLength = 107

    public init(parsing s: String) throws {
        func fail(_ reason: String) -> EndpointError { .invalid(s, reason: reason) }
        guard s.utf8.count <= WireProtocol.maxEndpointLength else {
            throw fail("longer than \(WireProtocol.maxEndpointLength) bytes")
        }
        let (plain, key) = ZMQCurve.splitServerKey(s)
        if let key {
            guard ZMQCurve.decode(key) != nil else { throw fail("'#\(key)' is not a Z85 CURVE public key (40 characters)") }
        }
        serverKey = key
        guard let sep = plain.range(of: "://") else { throw fail("no transport (missing '://')") }
        guard let transport = Transport(rawValue: String(plain[..<sep.lowerBound])) else {
            throw fail("transport '\(plain[..<sep.lowerBound])' is not tcp, ipc or inproc")
        }
        let address = String(plain[sep.upperBound...])
        guard !address.isEmpty else { throw fail("empty address") }
        guard address.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }) else {
            throw fail("spaces or control characters in the address")
        }
        self.transport = transport
        self.address = address
        switch transport {
        case .tcp:
            guard let colon = address.lastIndex(of: ":") else { throw fail("no port (expected HOST:PORT)") }
            let host = String(address[..<colon]), portText = String(address[address.index(after: colon)...])
            guard Self.isValidHost(host) else { throw fail("host '\(host)' is not a name, an IP address or '*'") }
            if portText == "*" {
                port = nil
            } else {
                guard portText.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let p = Int(portText), (1...65535).contains(p) else {
                    throw fail("port '\(portText)' is not 1...65535 or '*'")
                }
                port = p
            }
            self.host = host
        case .ipc:
            guard address.utf8.count <= Self.maxIPCPathLength else { throw fail("ipc path over \(Self.maxIPCPathLength) bytes") }
            host = nil
            port = nil
        case .inproc:
            host = nil
            port = nil
        }
    }

    /// True when the endpoint can only be bound (`*` host or port).
    public var isWildcard: Bool { transport == .tcp && (host == "*" || port == nil) }

    public var description: String { "\(transport.rawValue)://\(address)" + (serverKey.map { "#" + $0 } ?? "") }

    /// The endpoint without its key, as libzmq and the byte counters name it.
    public var withoutKey: String { "\(transport.rawValue)://\(address)" }

    private static func isValidHost(_ h: String) -> Bool {
        if h == "*" { return true }
        if h.hasPrefix("["), h.hasSuffix("]"), h.count > 2 {
            return h.dropFirst().dropLast().utf8.allSatisfy { isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }
        }
        // A name, an IPv4 address, or an interface name (e.g. eth0), as libzmq accepts.
        return !h.isEmpty && h.utf8.count <= 253 && h.utf8.allSatisfy {
            isHexDigit($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0)
                || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
        }
    }

    private static func isHexDigit(_ c: UInt8) -> Bool {
        (0x30...0x39).contains(c) || (0x41...0x46).contains(c) || (0x61...0x66).contains(c)
    }
}
