import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// A live cluster under a flood of damaged messages: 100,000 mutated and random
/// messages, half to the coordinator and half to a worker, while a session generates. No
/// process falls over, and the session ends with the single-process tokens.
///
/// Only messages that do not decode are sent: a well-formed message from an unknown peer
/// (a shutdown, a session's states) is a matter of authentication, not of parsing.
@Suite(.enabled(if: ClusterAssets.available, "needs the SmolLM2 model (scripts/setup.sh) and a built sparsekv"), .serialized)
struct LiveFuzzProcessTests {
    static let total = 100_000

    /// A damaged copy of a sample: bytes flipped, cut, or appended; some are plain noise.
    static func mutant(_ samples: [[UInt8]], _ g: inout SeededGenerator) -> [UInt8] {
        if Int.random(in: 0..<10, using: &g) == 0 {
            return (0..<Int.random(in: 0...200, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
        }
        var b = samples[Int.random(in: 0..<samples.count, using: &g)]
        switch Int.random(in: 0..<4, using: &g) {
        case 0:
            for _ in 0..<Int.random(in: 1...4, using: &g) where !b.isEmpty { b[Int.random(in: 0..<b.count, using: &g)] ^= UInt8.random(in: 1...255, using: &g) }
        case 1:
            b = Array(b.prefix(Int.random(in: 0..<b.count, using: &g)))
        case 2:
            b += (0..<Int.random(in: 1...16, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
        default:
            // A field in the body made huge (a count or a length).
            if b.count > WireProtocol.headerSize + 4 {
                let at = Int.random(in: WireProtocol.headerSize..<(b.count - 3), using: &g)
                b.replaceSubrange(at..<at + 4, with: [0xFF, 0xFF, 0xFF, UInt8.random(in: 0x7F...0xFF, using: &g)])
            }
        }
        return b
    }

    @Test func damagedMessagesDuringAGenerationChangeNothing() throws {
        let cluster = try LocalCluster(workers: 3, kv: "csr:8")
        let request = GenerateRequestBody(prompt: ClusterProcessTests.prompt, maxTokens: 64, ignoreEOS: true)
        let expected = try ClusterProcessTests.localTokens(kv: "csr:8", maxTokens: request.maxTokens, ctx: 512)
        let samples = try Samples.all().map { try $0.encode() }.filter { $0.count < 65_536 }
        let targets = [cluster.endpoint, cluster.workerEndpoints[1]]
        var options = ZMQSocketOptions()
        options.linger = .zero
        let context = try ZMQContext()
        let peers = try targets.map { _ in try ZMQSocket(context: context, kind: .dealer, options: options) }
        defer { peers.forEach { $0.close() } }
        for (p, t) in zip(peers, targets) { try p.connect(t) }

        let running = DrainHandoffProcessTests.Background(endpoint: cluster.endpoint, request)
        var g = SeededGenerator(seed: 12)
        var sent = 0, answers = 0
        while sent < Self.total {
            let bytes = Self.mutant(samples, &g)
            let decodes = bytes.withUnsafeBytes { (try? WireProtocol.decode($0)) != nil }
            if decodes { continue }
            try peers[sent % 2].send([bytes], timeout: .seconds(10))
            sent += 1
            // Read what came back now and then (the nodes do not wait for a reader).
            if sent % 64 == 0 {
                for p in peers { while try p.receive(timeout: .zero) != nil { answers += 1 } }
            }
        }
        let reply = try running.wait()
        #expect(reply.generatedTokens == expected, "fuzzed session \(reply.generatedTokens) vs local \(expected)")
        #expect(cluster.all.allSatisfy { $0.process.isRunning }, "every process is alive")
        #expect(answers > 0, "malformed messages are answered with errors")
        // Still serving, and the damage was counted as refused messages.
        let after = try ClusterClient(coordinator: cluster.endpoint).generate(GenerateRequestBody(prompt: ClusterProcessTests.prompt, maxTokens: 8, ignoreEOS: true))
        #expect(after.generatedTokens == Array(expected.prefix(8)))
        #expect(cluster.stop())
    }
}
