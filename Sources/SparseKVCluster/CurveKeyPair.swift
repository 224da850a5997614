import CZMQ
import Foundation

/// A node's CURVE key pair as Z85 text, and its files: `DIR/key` (the secret key, mode
/// 0600) and `DIR/key.pub` (the public key), written by `sparsekv keys generate`.
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    /// Checks both keys are Z85 and that the public key belongs to the secret key.
    public init(publicKey: String, secretKey: String) throws {
        guard ZMQCurve.decode(secretKey) != nil else { throw CurveKeyError.malformedKey("the secret key", secretKey.count) }
        guard ZMQCurve.decode(publicKey) != nil else { throw CurveKeyError.malformedKey("the public key", publicKey.count) }
        guard try Self.publicKey(ofSecret: secretKey) == publicKey else { throw CurveKeyError.mismatchedPair }
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A new random key pair (zmq_curve_keypair).
    public static func generate() throws -> CurveKeyPair {
        guard ZMQCurve.isAvailable else { throw CurveKeyError.curveUnavailable }
        var pub = [CChar](repeating: 0, count: ZMQCurve.z85KeyLength + 1)
        var sec = [CChar](repeating: 0, count: ZMQCurve.z85KeyLength + 1)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw ZMQError.last("zmq_curve_keypair") }
        return try CurveKeyPair(publicKey: text(pub), secretKey: text(sec))
    }

    /// The public key of a Z85 secret key (zmq_curve_public).
    static func publicKey(ofSecret secret: String) throws -> String {
        guard ZMQCurve.isAvailable else { throw CurveKeyError.curveUnavailable }
        var pub = [CChar](repeating: 0, count: ZMQCurve.z85KeyLength + 1)
        guard zmq_curve_public(&pub, secret) == 0 else { throw CurveKeyError.malformedKey("the secret key", secret.count) }
        return text(pub)
    }

    private static func text(_ c: [CChar]) -> String {
        String(decoding: c.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - Files

    public static let secretFileName = "key"
    public static let publicFileName = "key.pub"
    public static let authorizedDirectoryName = "authorized"

    /// Writes `DIR/key` (0600), `DIR/key.pub` and creates `DIR/authorized/`. Refuses to
    /// overwrite an existing key.
    public func write(to directory: String) throws {
        let fm = FileManager.default
        let secretPath = directory + "/" + Self.secretFileName
        guard !fm.fileExists(atPath: secretPath) else { throw CurveKeyError.exists(secretPath) }
        do {
            try fm.createDirectory(atPath: directory + "/" + Self.authorizedDirectoryName, withIntermediateDirectories: true)
            // Created empty with mode 0600 before the secret goes in: never readable by others.
            guard fm.createFile(atPath: secretPath, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw CurveKeyError.unwritable(secretPath, "cannot create the file")
            }
            try Data((secretKey + "\n").utf8).write(to: URL(fileURLWithPath: secretPath))
            try Data((publicKey + "\n").utf8).write(to: URL(fileURLWithPath: directory + "/" + Self.publicFileName))
        } catch let e as CurveKeyError {
            throw e
        } catch {
            throw CurveKeyError.unwritable(directory, error.localizedDescription)
        }
    }

    /// Loads `DIR/key` and checks `DIR/key.pub` against it.
    public static func load(directory: String) throws -> CurveKeyPair {
        let secret = try readKey(directory + "/" + secretFileName)
        let pub = try readKey(directory + "/" + publicFileName)
        return try CurveKeyPair(publicKey: pub, secretKey: secret)
    }

    /// The key in a key file: its first non-empty line, trimmed.
    public static func readKey(_ path: String) throws -> String {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw CurveKeyError.unreadable(path, error.localizedDescription)
        }
        let key = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.first { !$0.isEmpty } ?? ""
        guard ZMQCurve.decode(key) != nil else { throw CurveKeyError.malformedKey(path, key.count) }
        return key
    }
}
