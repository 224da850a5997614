import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// Each kind of damage gives its own ``WireError``.
@Suite struct WireDecodeErrorTests {
    func decode(_ bytes: [UInt8]) throws -> WireMessage { try WireMessage.decode(bytes) }

    func ping() throws -> [UInt8] { try WireMessage(.ping(nonce: 5), requestID: 1).encode() }

    @Test func wrongMagic() throws {
        var b = try ping()
        b[0] = 0x00
        #expect(throws: WireError.badMagic(0x5756_4B00)) { try decode(b) }
        #expect(throws: WireError.badMagic(0x4356_4B53)) {  // an engine KV payload sent by mistake
            try decode(Samples.raw(kind: 0x42, body: [], magic: KVPayloadHeader.magic))
        }
    }

    @Test func wrongVersion() throws {
        for v: UInt16 in [0, 1, 0xFFFF] {
            // Refused on the version alone, whatever follows it.
            let b = Samples.raw(kind: 0xEE, flags: 0xFF, body: [1, 2, 3], version: v)
            #expect(throws: WireError.unsupportedVersion(received: v, supported: 2)) { try decode(b) }
            #expect(throws: WireError.unsupportedVersion(received: v, supported: 2)) { try decode(Array(b.prefix(6))) }
        }
    }

    @Test func unknownKind() throws {
        let known = Set(MessageKind.allCases.map(\.rawValue))
        for k in UInt8.min...UInt8.max where !known.contains(k) {
            #expect(throws: WireError.unknownKind(k)) { try decode(Samples.raw(kind: k, body: [])) }
        }
    }

    @Test func headerLengthFields() throws {
        var b = try ping()
        b.replaceSubrange(24..<28, with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: WireError.messageTooLarge(bytes: 28 + 0xFFFF_FFFF, limit: 1 << 30)) { try decode(b) }
        b.replaceSubrange(24..<28, with: [0x09, 0, 0, 0])
        #expect(throws: WireError.bodyLengthMismatch(kind: .ping, declared: 9, actual: 8)) { try decode(b) }
        #expect(throws: WireError.bodyLengthMismatch(kind: .ping, declared: 8, actual: 9)) { try decode(try ping() + [0]) }
    }

    @Test func trailingBytesInsideTheBody() throws {
        for m in try Samples.all() {
            var b = try m.encode() + [0xAB, 0xCD]
            let n = UInt32(b.count - 28)
            b.replaceSubrange(24..<28, with: withUnsafeBytes(of: n.littleEndian, Array.init))
            #expect(throws: WireError.trailingBytes(kind: m.kind, count: 2)) { try decode(b) }
        }
    }

    @Test func oversizedLengthFields() throws {
        let register = Samples.raw(kind: 0x01, body: Samples.body { w in
            w.write(UInt32(65))
            w.write(array: [UInt8](repeating: 0x61, count: 65))
        })
        #expect(throws: WireError.lengthOverLimit(kind: .register, field: "worker id", length: 65, limit: 64)) { try decode(register) }

        func activations(tokens: UInt32, dim: UInt32, floats: [Float] = [], workers: UInt32 = 0) -> [UInt8] {
            Samples.raw(kind: 0x10, flags: 1, sessionID: 1, body: Samples.body { w in
                w.write(UInt32(0))
                w.write(UInt32(0))
                w.write(tokens)
                w.write(dim)
                w.write(UInt64(0))
                w.write(array: floats)
                w.write(UInt32(workers))
            })
        }
        #expect(throws: WireError.lengthOverLimit(kind: .activations, field: "token count", length: 8193, limit: 8192)) {
            try decode(activations(tokens: 8193, dim: 576))
        }
        #expect(throws: WireError.lengthOverLimit(kind: .activations, field: "hidden dim", length: 0xFFFF_FFFF, limit: 16384)) {
            try decode(activations(tokens: 1, dim: 0xFFFF_FFFF))
        }
        #expect(throws: WireError.invalidField(kind: .activations, field: "token count", reason: "0, at least 1 needed")) {
            try decode(activations(tokens: 0, dim: 4))
        }
        // Within the limits but more floats than the message holds.
        #expect(throws: WireError.truncated(kind: .activations, field: "hidden states")) {
            try decode(activations(tokens: 8192, dim: 16384, floats: [1, 2]))
        }

        #expect(throws: WireError.lengthOverLimit(kind: .activations, field: "worker count", length: 1025, limit: 1024)) {
            try decode(activations(tokens: 1, dim: 4, floats: [0, 0, 0, 0], workers: 1025))
        }
        #expect(throws: WireError.truncated(kind: .activations, field: "length of worker 0 id")) {
            try decode(activations(tokens: 1, dim: 4, floats: [0, 0, 0, 0], workers: 1))
        }
        let token = Samples.raw(kind: 0x54, body: Samples.body { w in w.write(UInt32(bitPattern: -3)) })
        #expect(throws: WireError.invalidField(kind: .generateToken, field: "token id", reason: "-3; negative")) { try decode(token) }

        func kvTransfer(payloadLength: UInt32, payload: [UInt8]) -> [UInt8] {
            Samples.raw(kind: 0x20, sessionID: 1, body: Samples.body { w in
                w.write(UInt32(10))
                w.write(UInt32(12))
                w.write("fp16")
                w.write("")
                w.write(UInt8(0))
                w.write(payloadLength)
                w.write(array: payload)
            })
        }
        #expect(throws: WireError.lengthOverLimit(kind: .kvTransfer, field: "payload", length: 0xFFFF_FFF0, limit: 1 << 30)) {
            try decode(kvTransfer(payloadLength: 0xFFFF_FFF0, payload: [1, 2, 3]))
        }
        #expect(throws: WireError.truncated(kind: .kvTransfer, field: "payload")) {
            try decode(kvTransfer(payloadLength: 1000, payload: [1, 2, 3]))
        }
        let stats = Samples.raw(kind: 0x31, body: Samples.body { w in
            w.write(UInt64(0))
            w.write(UInt32(0))
            for _ in 0..<4 { w.write(UInt64(0)) }
            w.write(UInt32(1_000_000))
        })
        #expect(throws: WireError.lengthOverLimit(kind: .statsReply, field: "peer count", length: 1_000_000, limit: 4096)) {
            try decode(stats)
        }
    }

    @Test func flagsAndSessionRules() throws {
        let a = try #require(try Samples.all().first { $0.kind == .activations })
        var b = try a.encode()
        for bad: UInt8 in [0, 3, 4, 0x80] {
            b[7] = bad
            #expect(throws: WireError.invalidFlags(kind: .activations, flags: bad)) { try decode(b) }
        }
        b[7] = WireProtocol.decodeFlag
        guard case .activations(let decoded) = try decode(b).body else { throw WireError.unknownKind(0) }
        #expect(decoded.phase == .decode)
        b.replaceSubrange(16..<24, with: [UInt8](repeating: 0, count: 8))
        #expect(throws: WireError.invalidField(kind: .activations, field: "session id", reason: "0; this kind belongs to a session")) {
            try decode(b)
        }
        var p = try ping()
        p[7] = 1
        #expect(throws: WireError.invalidFlags(kind: .ping, flags: 1)) { try decode(p) }
        p[7] = 0
        p[16] = 1
        #expect(throws: WireError.invalidField(kind: .ping, field: "session id", reason: "1; this kind has no session")) { try decode(p) }
    }

    @Test func fieldValues() throws {
        // An empty or reversed layer range is refused before a Range is formed (which would trap).
        let reversed = Samples.raw(kind: 0x04, body: Samples.body { w in
            w.write(UInt32(20))
            w.write(UInt32(10))
            w.write(UInt64(1))
        })
        #expect(throws: WireError.invalidField(kind: .shardReady, field: "layers", reason: "20..<10 is empty")) { try decode(reversed) }

        let notUTF8 = Samples.raw(kind: 0x40, body: Samples.body { w in
            w.write(UInt32(3))
            w.write(array: [0x61, 0xC3, 0x28] as [UInt8])
        })
        #expect(throws: WireError.invalidField(kind: .shutdown, field: "reason", reason: "not valid UTF-8")) { try decode(notUTF8) }

        func register(endpoint: String) -> [UInt8] {
            Samples.raw(kind: 0x01, body: Samples.body { w in
                w.write("worker-a")
                w.write(endpoint)
                w.write(UInt64(1 << 30))
                w.write(Samples.fingerprint)
            })
        }
        #expect(throws: Never.self) { try decode(register(endpoint: "tcp://10.1.2.3:7000")) }
        for bad in ["tcp://10.1.2.3", "udp://h:1", "tcp://h:70000", "tcp://*:7000", "tcp://h:*", "ipc://"] {
            #expect(throws: WireError.self, "\(bad)") { try decode(register(endpoint: bad)) }
        }

        let unknownCode = Samples.raw(kind: 0x41, body: Samples.body { w in
            w.write(UInt16(999))
            w.write("x")
        })
        #expect(throws: WireError.invalidField(kind: .error, field: "code", reason: "unknown error code 999")) { try decode(unknownCode) }

        let badHop = Samples.raw(kind: 0x03, body: Samples.body { w in
            w.write(UInt32(0))
            w.write(UInt32(10))
            w.write(UInt32(30))
            w.write("fp16")
            w.write("")
            w.write(UInt32(2048))
            w.write(UInt8(2))
        })
        #expect(throws: WireError.invalidField(kind: .shardAssignment, field: "next hop", reason: "tag 2, expected 0 (coordinator) or 1 (peer)")) {
            try decode(badHop)
        }

        let duplicatePeers = Samples.raw(kind: 0x31, body: Samples.body { w in
            w.write(UInt64(0))
            w.write(UInt32(0))
            for _ in 0..<4 { w.write(UInt64(0)) }
            w.write(UInt32(2))
            for _ in 0..<2 {
                w.write("worker-a")
                for _ in 0..<16 { w.write(UInt64(1)) }
            }
        })
        #expect(throws: WireError.invalidField(kind: .statsReply, field: "peer 1 label", reason: "labels must be unique and ascending")) {
            try decode(duplicatePeers)
        }
    }

    @Test func nonFiniteActivations() throws {
        for (i, bad) in [(0, Float.nan), (575, Float.infinity), (1000, -Float.infinity), (7, Float.signalingNaN)] {
            var hidden = Samples.floats(2 * 576, seed: 1)
            hidden[i] = bad
            let raw = Samples.raw(kind: 0x10, flags: 1, sessionID: 4, body: Samples.body { w in
                w.write(UInt32(0))
                w.write(UInt32(0))
                w.write(UInt32(2))
                w.write(UInt32(576))
                w.write(UInt64(0))
                w.write(array: hidden)
                w.write(UInt32(0))
            })
            #expect(throws: WireError.nonFiniteValue(kind: .activations, field: "hidden states", index: i)) { try decode(raw) }
        }
    }

    @Test func kvPayloadMustMatchTheMessage() throws {
        func transfer(encoding: String, hash: String, payload: [UInt8]) -> [UInt8] {
            Samples.raw(kind: 0x20, sessionID: 1, body: Samples.body { w in
                w.write(UInt32(10))
                w.write(UInt32(12))
                w.write(encoding)
                w.write(hash)
                w.write(UInt8(1))
                w.write(UInt32(payload.count))
                w.write(array: payload)
            })
        }
        let dense = try Samples.densePayload()
        #expect(throws: Never.self) { try decode(transfer(encoding: "fp16", hash: "", payload: dense)) }
        #expect(throws: WireError.self) { try decode(transfer(encoding: "csr", hash: Samples.dictionaryHash, payload: dense)) }
        #expect(throws: WireError.self) { try decode(transfer(encoding: "fp16", hash: Samples.dictionaryHash, payload: dense)) }
        #expect(throws: WireError.self) { try decode(transfer(encoding: "fp16", hash: "", payload: Array(dense.prefix(10)))) }
        #expect(throws: WireError.self) { try decode(transfer(encoding: "fp16", hash: "", payload: [])) }
        #expect(throws: WireError.self) { try decode(transfer(encoding: "csr", hash: "", payload: Samples.csrPayload())) }
    }
}
