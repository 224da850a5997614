import Foundation
import Logging

/// How a node secures its ZeroMQ links: plaintext (explicitly), or CURVE with its own key
/// pair, the directory of public keys it accepts, and, for connecting to a server whose
/// endpoint carries no `#KEY`, that server's public key.
public enum NodeSecurity: Sendable, Equatable {
    case insecure
    case curve(keys: CurveKeyPair, authorizedDirectory: String, serverKey: String?)

    /// Loads `DIR/key`, `DIR/key.pub` and uses `DIR/authorized/`.
    public static func load(keysDirectory dir: String, serverKey: String? = nil) throws -> NodeSecurity {
        let keys = try CurveKeyPair.load(directory: dir)
        if let serverKey, ZMQCurve.decode(serverKey) == nil { throw CurveKeyError.malformedKey("--server-key", serverKey.count) }
        return .curve(keys: keys, authorizedDirectory: dir + "/" + CurveKeyPair.authorizedDirectoryName, serverKey: serverKey)
    }

    /// Options for a bound (server) socket.
    public func server(_ options: ZMQSocketOptions = ZMQSocketOptions()) -> ZMQSocketOptions {
        var o = options
        if case .curve(let keys, _, _) = self { o.curve = .server(keys) }
        return o
    }

    /// Options for a connecting (client) socket.
    public func client(_ options: ZMQSocketOptions = ZMQSocketOptions()) -> ZMQSocketOptions {
        var o = options
        if case .curve(let keys, _, let serverKey) = self { o.curve = .client(keys, serverKey: serverKey) }
        return o
    }

    /// Starts the context's ZAP handler (CURVE only); call before binding a server socket.
    public func startAuthentication(context: ZMQContext, logger: Logger) throws -> ZAPHandler? {
        guard case .curve(let keys, let dir, _) = self else { return nil }
        return try ZAPHandler(context: context, authorizedDirectory: dir, ownPublicKey: keys.publicKey, logger: logger)
    }

    /// `bound` with `#<public key>` appended under CURVE: the endpoint peers connect to.
    public func advertised(_ bound: String) -> String {
        guard case .curve(let keys, _, _) = self else { return bound }
        return bound + "#" + keys.publicKey
    }
}
