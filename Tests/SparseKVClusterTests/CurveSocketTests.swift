import Foundation
import Logging
import Testing
@testable import SparseKVCluster

/// CURVE on real libzmq sockets in this process: key files, socket options, the ZAP
/// handler's decisions, and what crosses a loopback link with and without CURVE.
@Suite(.enabled(if: ZMQCurve.isAvailable, "libzmq without CURVE")) struct CurveSocketTests {
    static let wait: Duration = .seconds(5)

    static func temporaryDirectory() throws -> String {
        let dir = NSTemporaryDirectory() + "sparsekv-curve-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// A CURVE ROUTER with a ZAP handler accepting the keys in `authorized`.
    final class Server {
        let context: ZMQContext
        let zap: ZAPHandler
        let socket: ZMQSocket
        let keys: CurveKeyPair
        let endpoint: String
        init(authorized: [CurveKeyPair], directory: String) throws {
            keys = try CurveKeyPair.generate()
            let dir = directory + "/server"
            try keys.write(to: dir)
            for (i, k) in authorized.enumerated() {
                try Data(k.publicKey.utf8).write(to: URL(fileURLWithPath: dir + "/authorized/peer\(i).pub"))
            }
            context = try ZMQContext()
            zap = try ZAPHandler(context: context, authorizedDirectory: dir + "/authorized", logger: Logger(label: "test-zap"))
            var o = ZMQSocketOptions()
            o.linger = .zero
            o.curve = .server(keys)
            socket = try ZMQSocket(context: context, kind: .router, options: o)
            endpoint = try socket.bind("tcp://127.0.0.1:*")
        }
        var port: Int { (try? Endpoint(parsing: endpoint).port ?? 0) ?? 0 }
        deinit {
            socket.close()
            zap.stop()
        }
    }

    static func client(_ context: ZMQContext, _ keys: CurveKeyPair?) throws -> ZMQSocket {
        var o = ZMQSocketOptions()
        o.linger = .zero
        o.curve = keys.map { .client($0, serverKey: nil) }
        let s = try ZMQSocket(context: context, kind: .dealer, options: o)
        try s.watchHandshakes()
        return s
    }

    /// Polls `checkHandshakes` until it throws or `wait` passes; the error, if any.
    static func handshakeError(_ s: ZMQSocket) -> ZMQError? {
        let deadline = ContinuousClock.now + wait
        while ContinuousClock.now < deadline {
            do { try s.checkHandshakes() } catch let e as ZMQError { return e } catch { return nil }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return nil
    }

    @Test func keyFilesRoundTripAndTheSecretIsPrivate() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pair = try CurveKeyPair.generate()
        #expect(pair.publicKey.count == 40 && pair.secretKey.count == 40 && pair.publicKey != pair.secretKey)
        try pair.write(to: dir + "/n")
        #expect(try CurveKeyPair.load(directory: dir + "/n") == pair)
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/n/key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        var isDirectory: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: dir + "/n/authorized", isDirectory: &isDirectory) && isDirectory.boolValue)
        #expect(throws: CurveKeyError.exists(dir + "/n/key")) { try CurveKeyPair.generate().write(to: dir + "/n") }
        // A key.pub from another pair is refused.
        try Data(try CurveKeyPair.generate().publicKey.utf8).write(to: URL(fileURLWithPath: dir + "/n/key.pub"))
        #expect(throws: CurveKeyError.mismatchedPair) { try CurveKeyPair.load(directory: dir + "/n") }
        try Data("not a key".utf8).write(to: URL(fileURLWithPath: dir + "/n/key.pub"))
        #expect(throws: CurveKeyError.self) { try CurveKeyPair.load(directory: dir + "/n") }
    }

    @Test func endpointsCarryTheServerKey() throws {
        let key = try CurveKeyPair.generate().publicKey
        let e = try Endpoint(parsing: "tcp://127.0.0.1:5555#" + key)
        #expect(e.serverKey == key && e.port == 5555 && e.host == "127.0.0.1")
        #expect(e.description == "tcp://127.0.0.1:5555#" + key && e.withoutKey == "tcp://127.0.0.1:5555")
        #expect(try Endpoint(parsing: e.description) == e)
        #expect(try Endpoint(parsing: "tcp://127.0.0.1:5555").serverKey == nil)
        #expect(throws: EndpointError.self) { try Endpoint(parsing: "tcp://127.0.0.1:5555#short") }
    }

    @Test func socketOptionsSelectCurve() throws {
        let ctx = try ZMQContext()
        let keys = try CurveKeyPair.generate()
        let security = NodeSecurity.curve(keys: keys, authorizedDirectory: "/nonexistent", serverKey: nil)
        var base = ZMQSocketOptions()
        base.linger = .zero
        let server = try ZMQSocket(context: ctx, kind: .router, options: security.server(base))
        let client = try ZMQSocket(context: ctx, kind: .dealer, options: security.client(base))
        let plain = try ZMQSocket(context: ctx, kind: .dealer, options: NodeSecurity.insecure.client(base))
        defer { server.close(); client.close(); plain.close() }
        #expect(try server.mechanism == "CURVE" && server.isCurveServer)
        #expect(try client.mechanism == "CURVE" && !client.isCurveServer)
        #expect(try plain.mechanism == "NULL")
        // A CURVE client needs the server's key: from the endpoint or the options.
        #expect(throws: CurveKeyError.noServerKey("tcp://127.0.0.1:5999")) { try client.connect("tcp://127.0.0.1:5999") }
        #expect(security.advertised("tcp://127.0.0.1:5999") == "tcp://127.0.0.1:5999#" + keys.publicKey)
        #expect(NodeSecurity.insecure.advertised("tcp://127.0.0.1:5999") == "tcp://127.0.0.1:5999")
    }

    @Test func onlyAuthorizedKeysGetThrough() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let friend = try CurveKeyPair.generate(), stranger = try CurveKeyPair.generate()
        let server = try Server(authorized: [friend], directory: dir)
        let ctx = try ZMQContext()
        let keyed = server.endpoint + "#" + server.keys.publicKey

        let good = try Self.client(ctx, friend)
        defer { good.close() }
        try good.connect(keyed)
        try good.send([Array("hello".utf8)], timeout: Self.wait)
        let got = try #require(try server.socket.receive(timeout: Self.wait), "the authorized client is heard")
        #expect(got.last == Array("hello".utf8))
        try server.socket.send([got[0], Array("welcome".utf8)], timeout: Self.wait)
        #expect(try good.receive(timeout: Self.wait) == [Array("welcome".utf8)])

        let bad = try Self.client(ctx, stranger)
        defer { bad.close() }
        try bad.connect(keyed)
        try bad.send([Array("let me in".utf8)], timeout: Self.wait)
        let refusal = try #require(Self.handshakeError(bad), "the refused client learns why")
        #expect(refusal.localizedDescription.contains("refused this node's CURVE public key"), "\(refusal.localizedDescription)")

        let plain = try Self.client(ctx, nil)
        defer { plain.close() }
        try plain.connect(server.endpoint)
        try plain.send([Array("plaintext".utf8)], timeout: Self.wait)
        let mismatch = try #require(Self.handshakeError(plain), "a plaintext client learns why")
        #expect(mismatch.localizedDescription.contains("CURVE and the other plaintext"), "\(mismatch.localizedDescription)")
        #expect(try plain.receive(timeout: .milliseconds(300)) == nil)

        #expect(try server.socket.receive(timeout: .seconds(1)) == nil, "neither the stranger nor the plaintext client got a message in")
    }

    /// A relay records the link: plaintext shows the message, CURVE does not (and still delivers it).
    @Test(arguments: [false, true])
    func curveHidesTheBytesOnTheLink(curve: Bool) throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let secret = "The capital of France is Paris, said the prompt"
        let clientKeys = try CurveKeyPair.generate()
        let ctx = try ZMQContext()
        var o = ZMQSocketOptions()
        o.linger = .zero
        let server: (socket: ZMQSocket, port: Int, key: String)
        let holder: Server?
        if curve {
            holder = try Server(authorized: [clientKeys], directory: dir)
            server = (holder!.socket, holder!.port, "#" + holder!.keys.publicKey)
        } else {
            holder = nil
            let s = try ZMQSocket(context: ctx, kind: .router, options: o)
            server = (s, try Endpoint(parsing: try s.bind("tcp://127.0.0.1:*")).port ?? 0, "")
        }
        let recorder = try LoopbackRecorder(upstreamPort: server.port)
        defer { recorder.stop() }
        let client = try Self.client(ctx, curve ? clientKeys : nil)
        defer { client.close() }
        try client.connect("tcp://127.0.0.1:\(recorder.port)" + server.key)
        try client.send([Array(secret.utf8)], timeout: Self.wait)
        let got = try #require(try server.socket.receive(timeout: Self.wait))
        #expect(got.last == Array(secret.utf8), "delivered through the relay")
        #expect(recorder.bytes.count > secret.utf8.count)
        #expect(recorder.saw(secret) == !curve, curve ? "CURVE: the text is not on the wire" : "plaintext: the relay sees the text")
        if !curve { server.socket.close() }
        _ = holder
    }
}
