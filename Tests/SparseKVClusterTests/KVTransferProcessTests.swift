import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// KV transfer between two real worker processes, the test playing the coordinator.
@Suite(.enabled(if: ClusterAssets.available, "needs the SmolLM2 model (scripts/setup.sh) and a built sparsekv"), .serialized)
struct KVTransferProcessTests {
    /// This test plays the coordinator and sends no pings: the workers must wait for it.
    static let patient = ["--heartbeat-ms", "1000", "--liveness", "600"]

    /// Worker A prefills a session, sends its CSR KV to worker B, and B continues the
    /// session with exactly A's output; a payload naming another dictionary is refused.
    @Test func csrSessionMovesBetweenWorkersAndContinuesIdentically() throws {
        let dir = NSTemporaryDirectory() + "sparsekv-kv-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let inbox = try TestPeer(kind: .router, bind: "tcp://127.0.0.1:*")
        let a = try Child("ka", arguments: ["worker", "--insecure", "--model", ClusterAssets.model, "--coordinator", inbox.boundEndpoint, "--id", "ka", "-t", "1"] + Self.patient, directory: dir)
        let b = try Child("kb", arguments: ["worker", "--insecure", "--model", ClusterAssets.model, "--coordinator", inbox.boundEndpoint, "--id", "kb", "-t", "1"] + Self.patient, directory: dir)
        defer { a.terminate(); b.terminate() }

        // Registration, assignment (both serve layers 0..<2), dictionary.
        var endpoints: [String: String] = [:]
        for _ in 0..<2 {
            let (m, from) = try inbox.next()
            guard case .register(let r) = m.body, let id = from.routingID else { throw HarnessError(description: "expected register, got \(m.kind)") }
            endpoints[r.workerID] = r.peerEndpoint.description
            try inbox.socket.send(WireMessage(.registerAck(workerIndex: endpoints.count - 1), requestID: m.requestID), to: id)
        }
        let epA = try #require(endpoints["ka"]), epB = try #require(endpoints["kb"])
        let linkA = try TestPeer(kind: .dealer, routingID: coordinatorPeerID, connect: epA)
        let linkB = try TestPeer(kind: .dealer, routingID: coordinatorPeerID, connect: epB)
        let dictionary = try CSRDictionary.load(path: ClusterAssets.dictionary)
        let gguf = [UInt8](try dictionary.ggufData())
        for link in [linkA, linkB] {
            try link.socket.send(WireMessage(.shardAssignment(ShardAssignmentBody(
                layers: 0..<2, modelLayers: 30, kvSpec: "csr:8", dictionaryHash: dictionary.contentHash, contextCapacity: 64, nextHop: .coordinator))))
            try link.socket.send(WireMessage(.dictionary(DictionaryBody(contentHash: dictionary.contentHash, gguf: gguf))))
        }
        var acks = 0
        for _ in 0..<4 {
            let (m, _) = try inbox.next()
            if case .dictionaryAck(let h) = m.body, h == dictionary.contentHash { acks += 1 }
        }
        #expect(acks == 2)

        // Prefill 5 tokens on A.
        let model = try LlamaModel(path: ClusterAssets.model, layers: 0..<2, embeddings: true, head: false)
        let session: UInt64 = 42
        let prompt: [Int32] = [504, 3575, 282, 4649, 314]
        try linkA.socket.send(WireMessage(.activations(ActivationsBody(
            phase: .prefill, nextLayer: 0, startPosition: 0, tokenCount: 5, hiddenDim: 576, hidden: try model.embed(prompt))),
            requestID: 1, sessionID: session))
        let (prefilled, _) = try inbox.next()
        #expect(prefilled.kind == .activations)

        // A -> B, CSR-coded.
        try linkA.socket.send(WireMessage(.kvRequest(KVRequestBody(layers: 0..<2, destination: try Endpoint(parsing: epB), encoding: "csr")),
                                          requestID: 2, sessionID: session))
        let (ack, ackFrom) = try inbox.next()
        #expect(ackFrom.peer == "kb")
        guard case .kvTransferAck(let installed) = ack.body else { throw HarnessError(description: "expected an ack, got \(ack.kind)") }
        #expect(ack.requestID == 2 && ack.sessionID == session)
        #expect(installed.layers == 0..<2 && installed.tokenCount == 5 && installed.mode == .install)
        #expect(installed.payloadBytes > 0 && installed.wireBytes > installed.payloadBytes, "the ack carries the payload's and the message's sizes")

        // One decode step on each: the same states must come out.
        let step = WireMessage(.activations(ActivationsBody(
            phase: .decode, nextLayer: 0, startPosition: 5, tokenCount: 1, hiddenDim: 576, hidden: try model.embed([7042]))),
            requestID: 3, sessionID: session)
        try linkA.socket.send(step)
        let (outA, _) = try inbox.next()
        try linkB.socket.send(step)
        let (outB, _) = try inbox.next()
        guard case .activations(let ha) = outA.body, case .activations(let hb) = outB.body else {
            throw HarnessError(description: "expected activations, got \(outA.kind) and \(outB.kind)")
        }
        #expect(ha.hidden == hb.hidden, "B continues the moved session exactly as A")

        // A payload coded with another dictionary is refused.
        let cache = model.makeCache(try KVCacheType(parsing: "csr:8", dictionary: dictionary), capacity: 64)
        var h = try model.embed(prompt)
        try model.forward(&h, count: 5, cache: cache)
        let payload = try cache.serialize(layers: 0..<2)
        let fp16 = model.makeCache(.fp16, capacity: 64)
        var h16 = try model.embed(prompt)
        try model.forward(&h16, count: 5, cache: fp16)
        let densePayload = try fp16.serialize(layers: 0..<2)
        print("kv transfer, 2 layers x 5 tokens: csr:8 payload \(payload.count) bytes, fp16 payload \(densePayload.count) bytes")
        try linkB.socket.send(WireMessage(.kvTransfer(KVTransferBody(layers: 0..<2, encoding: "csr", dictionaryHash: String(repeating: "e", count: 64),
                                                                     payload: payload)), requestID: 4, sessionID: 7))
        let (refusal, _) = try inbox.next()
        guard case .error(let e) = refusal.body else { throw HarnessError(description: "expected an error, got \(refusal.kind)") }
        #expect(e.code == .dictionaryMismatch && refusal.sessionID == 7)

        // Byte counters of the transfer agree on both ends.
        func stats(_ link: TestPeer) throws -> TrafficSnapshot {
            try link.socket.send(WireMessage(.statsRequest, requestID: 9))
            let (m, _) = try inbox.next()
            guard case .statsReply(let s) = m.body else { throw HarnessError(description: "expected statsReply, got \(m.kind)") }
            return s.traffic
        }
        let sA = try stats(linkA), sB = try stats(linkB)
        let sent = try #require(sA.byPeer[epB])[.kv].sentBytes, received = try #require(sB.byPeer["ka"])[.kv].receivedBytes
        #expect(sent == received && sent > 0)
        print("kv transfer counted: \(sent) bytes sent by ka, \(received) received by kb")
        for link in [linkA, linkB] { try link.socket.send(WireMessage(.shutdown(reason: "test over"))) }
        #expect(a.waitForExit(timeout: .seconds(10)) && b.waitForExit(timeout: .seconds(10)))
    }
}
