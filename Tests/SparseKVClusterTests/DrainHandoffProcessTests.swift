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

    /// A worker that registers once the cluster serves gets the dictionary, acks its hash
    /// and stands by without layers; serving goes on undisturbed.
    @Test func aLateWorkerGetsTheDictionaryAndStandsBy() throws {
        let cluster = try LocalCluster(workers: 2, kv: "csr:8")
        let client = try ClusterClient(coordinator: cluster.endpoint)
        let late = try Child("w9", arguments: ["worker", "--insecure", "--model", ClusterAssets.model, "--coordinator", cluster.endpoint,
                                               "--id", "w9", "-t", "1"], directory: cluster.directory)
        cluster.workers.append(late)
        let deadline = ContinuousClock.now + .seconds(60)
        var seen = TrafficByCategory()
        while ContinuousClock.now < deadline {
            seen = try client.stats().traffic.byPeer["w9"] ?? TrafficByCategory()
            if seen.dictionary.sentBytes > 0 && seen.control.receivedMessages >= 2 { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(seen.dictionary.sentBytes > 4_000_000, "the dictionary went to the late worker")
        #expect(seen.control.receivedMessages >= 2, "it registered and acked the dictionary's hash")
        #expect(throws: NodeError.self, "a standby holds no layers to drain") { try client.drain(DrainRequestBody(workerID: "w9")) }
        let reply = try client.generate(GenerateRequestBody(prompt: ClusterProcessTests.prompt, maxTokens: 8, ignoreEOS: true))
        #expect(reply.generatedTokens == Array(try ClusterProcessTests.localTokens(kv: "csr:8", maxTokens: 8, ctx: 512)))
        #expect(cluster.stop())
    }

    /// With kivi4 the streamed payloads are KIVI's own (window rows and group counts),
    /// checked by its format at the prefill worker.
    @Test(arguments: ["fp32", "csr:8", "kivi4"])
    func prefillDecodeHandoffGivesTheSingleProcessTokens(kv: String) throws {
        let cluster = try LocalCluster(workers: 2, kv: kv, coordinatorArguments: ["--prefill-workers", "1", "--handoff-baseline", "fp16", "--replicate"])
        let client = try ClusterClient(coordinator: cluster.endpoint)
        let request = GenerateRequestBody(prompt: ClusterProcessTests.prompt, maxTokens: 24, ignoreEOS: true)
        let reply = try client.generate(request)
        let expected = try ClusterProcessTests.localTokens(kv: kv, maxTokens: 24, ctx: 512)
        #expect(reply.generatedTokens == expected, "handoff \(reply.generatedTokens) vs local \(expected)")
        #expect(reply.kvTransferBytes > 0 && reply.kvBaselineBytes > 0, "the prompt's KV moved, and its fp16 baseline was measured")
        #expect(reply.kvCacheBytes > 0)
        if kv.hasPrefix("csr") { #expect(reply.kvTransferBytes * 4 < reply.kvBaselineBytes) }
        #expect(throws: NodeError.self, "drain is refused while pipelines must match") {
            try client.drain(DrainRequestBody(workerID: "w1"))
        }
        // A second session takes the same path.
        let second = try client.generate(request)
        #expect(second.generatedTokens == expected)

        // What the replies report is what the sockets counted: kv bytes the prefill worker
        // sent and the decode worker received. The decode worker streamed each decoded
        // token's KV back to the prefill worker (--replicate): one message per step.
        Thread.sleep(forTimeInterval: 0.3)
        let reported = [reply, second].reduce(UInt64(0)) { $0 + $1.kvTransferBytes + $1.kvBaselineBytes }
        let kv = try cluster.workerEndpoints.map { try ClusterClient(coordinator: $0).stats().traffic }.map { t in
            t.byPeer.values.reduce(TrafficCount()) { a, p in
                TrafficCount(sentBytes: a.sentBytes + p[.kv].sentBytes, sentMessages: a.sentMessages + p[.kv].sentMessages,
                             receivedBytes: a.receivedBytes + p[.kv].receivedBytes, receivedMessages: a.receivedMessages + p[.kv].receivedMessages)
            }
        }
        let decode = try #require(kv.firstIndex { $0.receivedBytes == reported }, "a worker received exactly the reported kv bytes: \(reported) vs \(kv)")
        let prefill = kv[1 - decode]
        #expect(prefill.sentBytes == reported)
        #expect(prefill.receivedBytes == kv[decode].sentBytes && prefill.receivedBytes > 0)
        #expect(prefill.receivedMessages == 2 * 23, "one stream message per decode step (24 tokens, 23 fed back, twice)")
        let coordinator = try client.stats().traffic
        let activations = coordinator.byPeer.values.reduce(UInt64(0)) { $0 + $1[.activations].sentBytes }
        #expect(activations == reply.activationBytesSent + second.activationBytesSent)
        #expect(cluster.stop())
    }
}
