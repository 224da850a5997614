import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// KV moves in a running cluster of real processes: draining a worker in the middle of a
/// generation, and the prefill -> decode handoff. The tokens must be the ones a single
/// process produces with the same cache settings.
@Suite(.enabled(if: ClusterAssets.available, "needs the SmolLM2 model (scripts/setup.sh) and a built sparsekv"), .serialized)
struct DrainHandoffProcessTests {
    /// A generate request run on its own thread, so the test can drain meanwhile.
    final class Background: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var result: Result<GenerateReplyBody, Error>?

        init(endpoint: String, _ request: GenerateRequestBody) {
            Thread.detachNewThread { [self] in
                result = Result { try ClusterClient(coordinator: endpoint).generate(request) }
                done.signal()
            }
        }

        func wait() throws -> GenerateReplyBody {
            guard done.wait(timeout: .now() + 600) == .success, let result else { throw HarnessError(description: "generation did not finish") }
            return try result.get()
        }
    }

    @Test(arguments: ["fp32", "csr:8"])
    func drainedSessionsGoOnWithTheSameTokens(kv: String) throws {
        let cluster = try LocalCluster(workers: 3, kv: kv)
        let control = try ClusterClient(coordinator: cluster.endpoint)
        #expect(throws: NodeError.self, "an unknown worker is refused") { try control.drain(DrainRequestBody(workerID: "nobody")) }
        #expect(throws: NodeError.self, "an unknown baseline is refused") { try control.drain(DrainRequestBody(workerID: "w1", baseline: "int3")) }
        let expected = try ClusterProcessTests.localTokens(kv: kv, maxTokens: 24, ctx: 512)
        let request = GenerateRequestBody(prompt: ClusterProcessTests.prompt, maxTokens: 24, ignoreEOS: true)

        // Drain w2 while a session is decoding (after 6 of its 24 tokens), with the fp16 baseline.
        let running = Background(endpoint: cluster.endpoint, request)
        let deadline = ContinuousClock.now + .seconds(60)
        while try control.stats().sessionCount == 0, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.02) }
        let drained = try control.drain(DrainRequestBody(workerID: "w2", baseline: "fp16", minGenerated: 6))
        let reply = try running.wait()
        #expect(reply.generatedTokens == expected, "drained session \(reply.generatedTokens) vs local \(expected)")

        #expect(drained.workerID == "w2" && drained.sessionCount == 1)
        let installed = drained.transfers.filter { $0.mode == .install }, measured = drained.transfers.filter { $0.mode == .measure }
        #expect(!installed.isEmpty && installed.count == measured.count)
        #expect(installed.allSatisfy { $0.encoding == (kv == "fp32" ? "fp32" : "csr") } && measured.allSatisfy { $0.encoding == "fp16" })
        #expect(installed.flatMap { Array($0.layers) }.sorted() == Array(drained.layers), "the moved pieces cover the drained layers once")
        let prompt = reply.promptTokens.count
        // Parked with 6 tokens generated: the caches hold the prompt and the 5 already fed back.
        #expect(drained.transfers.allSatisfy { $0.tokenCount >= prompt + 5 && $0.tokenCount < prompt + 23 },
                "moved mid-decode: \(drained.transfers.map(\.tokenCount)) tokens, prompt \(prompt)")
        #expect(drained.transfers.allSatisfy { $0.wireBytes > $0.payloadBytes && $0.payloadBytes > 0 })
        let bytes = { (t: [DrainReplyBody.Transfer]) in t.reduce(UInt64(0)) { $0 + $1.wireBytes } }
        #expect(reply.kvTransferBytes == bytes(installed), "the session's reply counts its moved KV")
        if kv.hasPrefix("csr") {
            #expect(bytes(installed) * 4 < bytes(measured), "CSR moves at least 4x fewer bytes than fp16: \(bytes(installed)) vs \(bytes(measured))")
        } else {
            #expect(bytes(installed) > bytes(measured), "fp32 moves more bytes than its fp16 baseline")
        }
        let w2 = try #require(cluster.workers.first { $0.name == "w2" })
        #expect(w2.waitForExit(timeout: .seconds(15)) && w2.process.terminationStatus == 0, "the drained worker exits cleanly")

        // The two remaining workers serve new sessions alike; then drain to one worker.
        #expect(try control.generate(request).generatedTokens == expected)
        let last = try control.drain(DrainRequestBody(workerID: "w1"))
        #expect(last.sessionCount == 0 && last.transfers.isEmpty)
        #expect(try control.generate(request).generatedTokens == expected, "one worker holding all layers in segments")
        #expect(throws: NodeError.self, "the last worker cannot be drained") { try control.drain(DrainRequestBody(workerID: "w3")) }
        #expect(cluster.stop())
    }

    @Test(arguments: ["fp32", "csr:8"])
    func prefillDecodeHandoffGivesTheSingleProcessTokens(kv: String) throws {
        let cluster = try LocalCluster(workers: 2, kv: kv, coordinatorArguments: ["--prefill-workers", "1"])
        let client = try ClusterClient(coordinator: cluster.endpoint)
        let reply = try client.generate(GenerateRequestBody(prompt: ClusterProcessTests.prompt, maxTokens: 24, ignoreEOS: true))
        let expected = try ClusterProcessTests.localTokens(kv: kv, maxTokens: 24, ctx: 512)
        #expect(reply.generatedTokens == expected, "handoff \(reply.generatedTokens) vs local \(expected)")
        #expect(reply.kvTransferBytes > 0, "the prompt's KV moved from the prefill to the decode worker")
        #expect(reply.kvCacheBytes > 0)
        #expect(throws: NodeError.self, "drain is refused while pipelines must match") {
            try client.drain(DrainRequestBody(workerID: "w1"))
        }
        // A second session takes the same path.
        #expect(try client.generate(GenerateRequestBody(prompt: ClusterProcessTests.prompt, maxTokens: 24, ignoreEOS: true)).generatedTokens == expected)
        #expect(cluster.stop())
    }
}
