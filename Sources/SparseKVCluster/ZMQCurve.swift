import CZMQ
import Foundation

/// CURVE security of one socket (libzmq's CurveZMQ: Curve25519 key exchange, then every
/// frame encrypted and authenticated). Keys are Z85 text, 40 characters for 32 bytes.
///
/// A server (the bound ROUTER) needs only its secret key; who may connect is decided by
/// the ZAP handler of its context (``ZAPHandler``). A client (a connecting DEALER) needs
/// its own key pair and the server's public key, which ``ZMQSocket/connect(_:)`` takes
/// from an endpoint ending in `#<server public key>` or else from `serverKey`.
public enum ZMQCurve: Sendable, Equatable {
    case server(CurveKeyPair)
    case client(CurveKeyPair, serverKey: String?)

    /// Length of a Z85-encoded 32-byte key.
    public static let z85KeyLength = 40

    /// The 32 bytes of a Z85 key; nil for anything that is not 40 Z85 characters.
    public static func decode(_ z85: String) -> [UInt8]? {
        guard z85.utf8.count == z85KeyLength else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        let ok = out.withUnsafeMutableBufferPointer { zmq_z85_decode($0.baseAddress, z85) != nil }
        return ok ? out : nil
    }

    /// The Z85 text of 32 key bytes.
    public static func encode(_ key: [UInt8]) -> String? {
        guard key.count == 32 else { return nil }
        var out = [CChar](repeating: 0, count: z85KeyLength + 1)
        guard zmq_z85_encode(&out, key, key.count) != nil else { return nil }
        return String(decoding: out.prefix(z85KeyLength).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// True when this libzmq was built with CURVE (zmq_has("curve")).
    public static var isAvailable: Bool { zmq_has("curve") != 0 }

    /// Splits `tcp://host:port#KEY` into the endpoint libzmq understands and the key.
    /// The key is everything after the first `#` (Z85 itself may contain `#`).
    public static func splitServerKey(_ endpoint: String) -> (endpoint: String, serverKey: String?) {
        guard let hash = endpoint.firstIndex(of: "#") else { return (endpoint, nil) }
        return (String(endpoint[..<hash]), String(endpoint[endpoint.index(after: hash)...]))
    }
}
