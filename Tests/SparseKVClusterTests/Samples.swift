import Foundation
@testable import SparseKVCluster
@testable import SparseKVEngine  // KVPayloadHeader's memberwise init

/// Realistic messages of every kind (SmolLM2-135M shapes: 30 layers, d_model 576,
/// 3 KV heads of 64), shared by the codec, fuzz and socket tests.
enum Samples {
    static let fingerprint = String(repeating: "3f9a0c7e", count: 8)  // 64 hex, like a SHA-256
    static let dictionaryHash = String(repeating: "b41d5e02", count: 8)
    static let sessionID: UInt64 = 0x5E55_1011

    static func endpoint(_ s: String) throws -> Endpoint { try Endpoint(parsing: s) }

    /// (n) seeded floats in -4...4
    static func floats(_ n: Int, seed: UInt64) -> [Float] {
        var g = SeededGenerator(seed: seed)
        return (0..<n).map { _ in Float.random(in: -4...4, using: &g) }
    }

    static func bytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var g = SeededGenerator(seed: seed)
        return (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    /// A real fp16 cache of layers 10..<12 (3 KV heads of 64) holding `tokens` tokens,
    /// serialized by the engine.
    static func densePayload(tokens: Int = 5) throws -> [UInt8] {
        let geometry = KVCacheGeometry(layers: 10..<12, kvHeads: 3, headDim: 64, capacity: 64)
        let cache = DenseKVCache<Float16>(geometry: geometry, rope: RoPE(headDim: 64, ropeDimension: 64, base: 100_000))
        let k = floats(tokens * geometry.rowWidth, seed: 11), v = floats(tokens * geometry.rowWidth, seed: 12)
        for layer in geometry.layers {
            try k.withUnsafeBufferPointer { kp in
                try v.withUnsafeBufferPointer { vp in
                    guard let kb = kp.baseAddress, let vb = vp.baseAddress else { return }
                    try cache.append(layer: layer, keys: kb, values: vb, count: tokens)
                }
            }
        }
        return try cache.serialize(layers: 10..<12)
    }

    /// A payload with a CSR header (layers 10..<12) followed by opaque code bytes: the wire
    /// layer checks only the header.
    static func csrPayload() -> [UInt8] {
        var w = BinaryWriter()
        KVPayloadHeader(kind: "csr", layers: 10..<12, kvHeads: 3, headDim: 64, tokenCount: 5, keysRotated: false).write(to: &w)
        w.write(dictionaryHash)
        w.write(array: bytes(300, seed: 13))
        return w.bytes
    }

    static func traffic() -> TrafficSnapshot {
        var coordinator = TrafficByCategory()
        coordinator.control = TrafficCount(sentBytes: 1_234, sentMessages: 9, receivedBytes: 880, receivedMessages: 7)
        coordinator.dictionary = TrafficCount(receivedBytes: 1_572_900, receivedMessages: 1)
        coordinator.activations = TrafficCount(sentBytes: 9_216_000, sentMessages: 400, receivedBytes: 9_216_000, receivedMessages: 400)
        var worker = TrafficByCategory()
        worker.kv = TrafficCount(sentBytes: 184_320, sentMessages: 2)
        return TrafficSnapshot(byPeer: ["coordinator": coordinator, "worker-c": worker],
                               rejected: TrafficCount(receivedBytes: 17, receivedMessages: 1))
    }

    /// One or more realistic messages of every kind.
    static func all() throws -> [WireMessage] {
        [
            WireMessage(.register(RegisterBody(
                workerID: "worker-a", peerEndpoint: try endpoint("tcp://10.0.0.7:5557"),
                memoryBudgetBytes: 2 << 30, modelFingerprint: fingerprint)), requestID: 1),
            WireMessage(.registerAck(workerIndex: 2), requestID: 1),
            WireMessage(.shardAssignment(ShardAssignmentBody(
                layers: 10..<20, modelLayers: 30, kvSpec: "csr:4,coef=i8", dictionaryHash: dictionaryHash,
                contextCapacity: 8192, nextHop: .peer(try endpoint("tcp://10.0.0.8:5557")))), requestID: 2),
            WireMessage(.shardAssignment(ShardAssignmentBody(
                layers: 20..<30, modelLayers: 30, kvSpec: "fp16", contextCapacity: 4096, nextHop: .coordinator)), requestID: 3),
            WireMessage(.shardReady(ShardReadyBody(layers: 10..<20, weightBytes: 31_457_280)), requestID: 2),
            WireMessage(.dictionary(DictionaryBody(contentHash: dictionaryHash, gguf: Array("GGUF".utf8) + bytes(6_000, seed: 3))),
                        requestID: 4),
            WireMessage(.dictionaryAck(contentHash: dictionaryHash), requestID: 4),
            WireMessage(.activations(ActivationsBody(
                phase: .prefill, nextLayer: 10, startPosition: 0, tokenCount: 3, hiddenDim: 576,
                hidden: floats(3 * 576, seed: 5))), requestID: 5, sessionID: sessionID),
            WireMessage(.activations(ActivationsBody(
                phase: .decode, nextLayer: 30, startPosition: 3, tokenCount: 1, hiddenDim: 576, kvBytes: 98_304,
                hidden: floats(576, seed: 6),
                kvBytesByWorker: [WorkerKVBytes(worker: "w1", bytes: 32_768), WorkerKVBytes(worker: "worker-b", bytes: 65_536)])),
                        requestID: 6, sessionID: sessionID),
            WireMessage(.kvTransfer(KVTransferBody(layers: 10..<12, encoding: "fp16", payload: try densePayload())),
                        requestID: 7, sessionID: sessionID),
            WireMessage(.kvTransfer(KVTransferBody(layers: 10..<12, encoding: "csr", dictionaryHash: dictionaryHash,
                                                   payload: csrPayload())), requestID: 8, sessionID: sessionID),
            WireMessage(.kvTransfer(KVTransferBody(layers: 10..<12, encoding: "fp16", mode: .measure, payload: try densePayload())),
                        requestID: 19, sessionID: sessionID),
            WireMessage(.kvTransferAck(KVTransferAckBody(layers: 10..<12, tokenCount: 5)), requestID: 7, sessionID: sessionID),
            WireMessage(.kvTransferAck(KVTransferAckBody(layers: 10..<12, tokenCount: 5, mode: .measure, payloadBytes: 7_715,
                                                         wireBytes: 7_790)), requestID: 19, sessionID: sessionID),
            WireMessage(.kvRequest(KVRequestBody(layers: 10..<20, destination: try endpoint("tcp://10.0.0.9:5557"), encoding: "csr")),
                        requestID: 9, sessionID: sessionID),
            WireMessage(.kvRequest(KVRequestBody(layers: 0..<10, destination: try endpoint("ipc:///tmp/sparsekv-b.sock"), encoding: "fp16",
                                                 mode: .measure)),
                        requestID: 10, sessionID: sessionID),
            WireMessage(.dropSession, requestID: 11, sessionID: sessionID),
            WireMessage(.statsRequest, requestID: 12),
            WireMessage(.statsReply(StatsReplyBody(traffic: traffic(), kvCacheBytes: 1_966_080, sessionCount: 3)), requestID: 12),
            WireMessage(.statsReply(StatsReplyBody(traffic: TrafficSnapshot())), requestID: 13),
            WireMessage(.statsReply(StatsReplyBody(traffic: traffic(), kvCacheBytes: 98_304, sessionCount: 1, cluster: ClusterStatus(
                serving: true, contextLength: 2048, kvSpec: "csr:8,coef=i8", dictionaryHash: dictionaryHash, workers: [
                    WorkerStatus(worker: "w1", ready: true, alive: true, kvBytes: 32_768),
                    WorkerStatus(worker: "worker-b", ready: false, alive: false, kvBytes: 0),
                ]))), requestID: 22),
            WireMessage(.shutdown(reason: "operator pressed Ctrl-C"), requestID: 14),
            WireMessage(.error(ErrorBody(code: .unknownSession, message: "session 0x5e551011 is not held by worker-b — dropped?")),
                        requestID: 15, sessionID: sessionID),
            WireMessage(.error(ErrorBody(code: .malformedMessage, message: "")), requestID: 16),
            WireMessage(.ping(nonce: 0xDEAD_BEEF_0000_0001), requestID: 17),
            WireMessage(.pong(nonce: 0xDEAD_BEEF_0000_0001), requestID: 17),
            WireMessage(.generateRequest(GenerateRequestBody(prompt: "Tell me about Paris — briefly.", chat: true, maxTokens: 32,
                                                             temperature: 0.7, topK: 40, topP: 0.9, seed: 7)), requestID: 18),
            WireMessage(.generateRequest(GenerateRequestBody(prompt: "Hi", maxTokens: 4, ignoreEOS: true, stream: true)), requestID: 23),
            WireMessage(.generateToken(49151), requestID: 23),
            WireMessage(.generateCancel, requestID: 23),
            WireMessage(.generateReply(GenerateReplyBody(
                promptTokens: [1, 2, 49151], generatedTokens: [5, 6], text: "Paris is", prefillNanoseconds: 12_000_000,
                decodeNanoseconds: 34_000_000, stopReason: "length", kvCache: "csr", kvCacheBytes: 123_456,
                activationBytesSent: 7_000, activationBytesReceived: 8_000, kvTransferBytes: 1_679, kvTransferNanoseconds: 2_500_000,
                kvBytesByWorker: [WorkerKVBytes(worker: "w1", bytes: 100_000), WorkerKVBytes(worker: "w2", bytes: 23_456)])),
                        requestID: 18),
            WireMessage(.drainRequest(DrainRequestBody(workerID: "w2", baseline: "fp16", minGenerated: 8)), requestID: 20),
            WireMessage(.drainRequest(DrainRequestBody(workerID: "worker-b")), requestID: 21),
            WireMessage(.drainReply(DrainReplyBody(workerID: "w2", layers: 10..<20, nanoseconds: 90_000_000, sessionCount: 1, transfers: [
                DrainReplyBody.Transfer(sessionID: sessionID, layers: 10..<15, destination: "w1", encoding: "csr", mode: .install,
                                        tokenCount: 3000, payloadBytes: 1_000_000, wireBytes: 1_000_080, nanoseconds: 4_000_000),
                DrainReplyBody.Transfer(sessionID: sessionID, layers: 10..<15, destination: "w1", encoding: "fp16", mode: .measure,
                                        tokenCount: 3000, payloadBytes: 4_000_000, wireBytes: 4_000_080, nanoseconds: 9_000_000),
            ])), requestID: 20),
            WireMessage(.drainReply(DrainReplyBody(workerID: "w3", layers: 20..<30, nanoseconds: 1, sessionCount: 0, transfers: [])),
                        requestID: 21),
        ]
    }

    /// A raw message: header with the given fields (body length = body.count) + body.
    static func raw(kind: UInt8, flags: UInt8 = 0, requestID: UInt64 = 1, sessionID: UInt64 = 0, body: [UInt8],
                    magic: UInt32 = WireProtocol.magic, version: UInt16 = WireProtocol.version) -> [UInt8] {
        var w = BinaryWriter()
        w.write(magic)
        w.write(version)
        w.write(kind)
        w.write(flags)
        w.write(requestID)
        w.write(sessionID)
        w.write(UInt32(body.count))
        w.write(array: body)
        return w.bytes
    }

    static func body(_ build: (inout BinaryWriter) -> Void) -> [UInt8] {
        var w = BinaryWriter()
        build(&w)
        return w.bytes
    }
}
