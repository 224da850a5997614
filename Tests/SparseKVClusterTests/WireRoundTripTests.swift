import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

@Suite struct WireRoundTripTests {
    @Test func everyKindRoundTrips() throws {
        let samples = try Samples.all()
        #expect(Set(samples.map(\.kind)) == Set(MessageKind.allCases), "a sample for every kind")
        for m in samples {
            let bytes = try m.encode()
            #expect(bytes.count >= WireProtocol.headerSize)
            let back = try WireMessage.decode(bytes)
            #expect(back == m, "\(m.kind)")
            #expect(try back.encode() == bytes, "\(m.kind) re-encodes to the same bytes")
        }
    }

    @Test func headerLayoutIsFixed() throws {
        // Golden bytes: a change here is a protocol change and needs a version bump.
        let bytes = try WireMessage(.ping(nonce: 0x0102_0304_0506_0708), requestID: 7).encode()
        #expect(bytes == [
            0x53, 0x4B, 0x56, 0x57,  // "SKVW"
            0x02, 0x00,  // version 2
            0x42, 0x00,  // kind ping, flags
            0x07, 0, 0, 0, 0, 0, 0, 0,  // request id
            0, 0, 0, 0, 0, 0, 0, 0,  // session id
            0x08, 0, 0, 0,  // body length
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // nonce
        ])
        let activations = try Samples.all().first { $0.kind == .activations }
        let a = try #require(activations)
        let ab = try a.encode()
        let header = try ab.withUnsafeBytes { try WireProtocol.decodeHeader($0) }
        #expect(header == WireHeader(kind: .activations, flags: WireProtocol.prefillFlag, requestID: a.requestID,
                                     sessionID: Samples.sessionID, bodyLength: ab.count - 28))
        // 4 u32 fields, the u64 KV byte count, (3, 576) fp32, an empty per-worker list
        #expect(ab.count == 28 + 16 + 8 + 3 * 576 * 4 + 4)
    }

    @Test func categoriesFollowKinds() throws {
        for m in try Samples.all() {
            let expected: TrafficCategory = switch m.kind {
            case .activations: .activations
            case .kvTransfer: .kv
            case .dictionary: .dictionary
            default: .control
            }
            #expect(m.category == expected)
        }
    }

    @Test func kvTransferCarriesTheEnginePayloadIntact() throws {
        let payload = try Samples.densePayload(tokens: 9)
        let m = WireMessage(.kvTransfer(KVTransferBody(layers: 10..<12, encoding: "fp16", payload: payload)),
                            sessionID: 3)
        guard case .kvTransfer(let t) = try WireMessage.decode(try m.encode()).body else {
            Issue.record("decoded another kind")
            return
        }
        let rope = RoPE(headDim: 64, ropeDimension: 64, base: 100_000)
        let cache = try DenseKVCache<Float16>.deserialize(t.payload, capacity: 64, rope: rope)
        #expect(cache.geometry.layers == 10..<12 && cache.count(layer: 11) == 9)
    }

    @Test func encodeRefusesWhatAReceiverWouldRefuse() throws {
        let good = ActivationsBody(phase: .decode, nextLayer: 0, startPosition: 0, tokenCount: 1, hiddenDim: 4, hidden: [1, 2, 3, 4])
        var nan = good
        nan.hidden[2] = .nan
        var short = good
        short.hidden = [1, 2]
        let cases: [(WireMessage, WireError)] = [
            (WireMessage(.activations(good), sessionID: 0),
             .invalidField(kind: .activations, field: "session id", reason: "0; this kind belongs to a session")),
            (WireMessage(.activations(nan), sessionID: 1), .nonFiniteValue(kind: .activations, field: "hidden states", index: 2)),
            (WireMessage(.activations(short), sessionID: 1),
             .invalidField(kind: .activations, field: "hidden states", reason: "2 floats for (1, 4)")),
            (WireMessage(.ping(nonce: 1), sessionID: 9),
             .invalidField(kind: .ping, field: "session id", reason: "9; this kind has no session")),
            (WireMessage(.registerAck(workerIndex: WireProtocol.maxWorkers)),
             .invalidField(kind: .registerAck, field: "worker index", reason: "1024 is out of range 0..<1024")),
            (WireMessage(.shutdown(reason: String(repeating: "x", count: 1025))),
             .lengthOverLimit(kind: .shutdown, field: "reason", length: 1025, limit: 1024)),
        ]
        for (m, expected) in cases {
            #expect(throws: expected) { try m.encode() }
        }
        let badID = WireMessage(.register(RegisterBody(
            workerID: "worker a", peerEndpoint: try Samples.endpoint("tcp://h:1"), memoryBudgetBytes: 1,
            modelFingerprint: Samples.fingerprint)))
        #expect(throws: WireError.self) { try badID.encode() }
        let wildcard = WireMessage(.register(RegisterBody(
            workerID: "w", peerEndpoint: try Samples.endpoint("tcp://*:5557"), memoryBudgetBytes: 1,
            modelFingerprint: Samples.fingerprint)))
        #expect(throws: WireError.self) { try wildcard.encode() }
        let csrWithoutHash = WireMessage(.kvTransfer(KVTransferBody(layers: 10..<12, encoding: "csr", payload: Samples.csrPayload())),
                                         sessionID: 1)
        #expect(throws: WireError.invalidField(kind: .kvTransfer, field: "dictionary hash", reason: "missing")) {
            try csrWithoutHash.encode()
        }
        let mislabelled = WireMessage(.kvTransfer(KVTransferBody(layers: 10..<12, encoding: "fp32", payload: try Samples.densePayload())),
                                      sessionID: 1)
        #expect(throws: WireError.invalidField(kind: .kvTransfer, field: "payload", reason: "holds a 'fp16' cache, the message says 'fp32'")) {
            try mislabelled.encode()
        }
        let otherLayers = WireMessage(.kvTransfer(KVTransferBody(layers: 10..<11, encoding: "fp16", payload: try Samples.densePayload())),
                                      sessionID: 1)
        #expect(throws: WireError.self) { try otherLayers.encode() }
        let denseWithHash = WireMessage(.shardAssignment(ShardAssignmentBody(
            layers: 0..<5, modelLayers: 30, kvSpec: "fp16", dictionaryHash: Samples.dictionaryHash, contextCapacity: 10,
            nextHop: .coordinator)))
        #expect(throws: WireError.self) { try denseWithHash.encode() }
        let pastModel = WireMessage(.shardAssignment(ShardAssignmentBody(
            layers: 20..<31, modelLayers: 30, kvSpec: "fp16", contextCapacity: 10, nextHop: .coordinator)))
        #expect(throws: WireError.self) { try pastModel.encode() }
        let notGGUF = WireMessage(.dictionary(DictionaryBody(contentHash: Samples.dictionaryHash, gguf: [1, 2, 3, 4, 5])))
        #expect(throws: WireError.self) { try notGGUF.encode() }
        let upperHex = WireMessage(.dictionaryAck(contentHash: "ABCDEF"))
        #expect(throws: WireError.self) { try upperHex.encode() }
    }

    @Test func peerLabels() {
        #expect(WireProtocol.peerLabel(routingID: [0, 0x6B, 0x8B, 0x45, 0x67]) == "0x006b8b4567")  // libzmq-generated
        #expect(WireProtocol.peerLabel(routingID: Array("worker-7".utf8)) == "worker-7")
        #expect(WireProtocol.peerLabel(routingID: Array("worker 7".utf8)) == "0x776f726b65722037")
        #expect(WireProtocol.peerLabel(routingID: []) == "0x")
    }

    @Test func statsReplyListsPeersInOrder() throws {
        var t = TrafficSnapshot()
        for name in ["worker-c", "coordinator", "worker-a", "0x00a1b2c3d4"] {
            var c = TrafficByCategory()
            c.kv.sentBytes = UInt64(name.count)
            t.byPeer[name] = c
        }
        let m = WireMessage(.statsReply(StatsReplyBody(traffic: t, kvCacheBytes: 5, sessionCount: 1)))
        let bytes = try m.encode()
        #expect(try WireMessage.decode(bytes) == m)
        // Same snapshot, different dictionary insertion order: same bytes.
        var t2 = TrafficSnapshot()
        for (k, v) in t.byPeer.sorted(by: { $0.key > $1.key }) { t2.byPeer[k] = v }
        #expect(try WireMessage(.statsReply(StatsReplyBody(traffic: t2, kvCacheBytes: 5, sessionCount: 1))).encode() == bytes)
    }
}
