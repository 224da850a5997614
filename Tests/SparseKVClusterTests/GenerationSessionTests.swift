import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// A session rebuilt after a failover (its KV lost, every token replayed) goes on with the
/// tokens of an uninterrupted run. The pipeline here is the real model's 30 layers run in
/// this process, as one worker runs them.
@Suite(.enabled(if: FileManager.default.fileExists(atPath: ClusterAssets.model), "needs the SmolLM2 model (scripts/setup.sh)"))
struct GenerationSessionTests {
    static let prompt: [Int32] = [1, 504, 3575, 282, 4649, 314, 12, 960, 28]

    /// Runs a session to the end; when it has generated `restartAfter` tokens (or, for 0,
    /// in the middle of its prompt), the states in flight are dropped with the caches and
    /// the session restarts on fresh ones.
    static func run(kv: String, restartAfter: Int?, prefillBatch: Int = 512) throws -> (tokens: [Int32], restarts: Int) {
        let gguf = try GGUFFile(path: ClusterAssets.model)
        let head = try LlamaModel(gguf: gguf, layers: 0..<0, embeddings: true, head: true)
        let layers = try LlamaModel(gguf: gguf, layers: 0..<head.config.layerCount, embeddings: false, head: false)
        let type: KVCacheType = kv.hasPrefix("csr")
            ? try KVCacheType(parsing: kv, dictionary: try CSRDictionary.load(path: ClusterAssets.dictionary))
            : try KVCacheType(parsing: kv)
        var session = GenerationSession(id: 1, prompt: prompt, maxTokens: 10, sampling: SamplingOptions(), contextLength: 256,
                                        isStop: { _ in false })
        session.prefillBatch = prefillBatch
        var cache = layers.makeCache(type, capacity: 256)
        var action = try session.start(model: head)
        var restarted = false
        var sent = 0
        while case .send(var states) = action {
            sent += 1
            let due = restartAfter.map { $0 == 0 ? sent == 2 : session.generated.count == $0 && states.phase == .decode } ?? false
            if due, !restarted {
                restarted = true
                cache = layers.makeCache(type, capacity: 256)
                action = try session.restart(model: head)
                #expect(session.isReplaying)
                continue
            }
            try layers.forward(&states.hidden, count: states.tokenCount, layers: 0..<head.config.layerCount, cache: cache)
            states.nextLayer = head.config.layerCount
            action = try session.receive(states, model: head)
        }
        #expect(!session.isReplaying)
        return (session.generated, session.restarts)
    }

    @Test(arguments: ["fp32", "csr:8"])
    func aRestartedSessionGivesTheUninterruptedTokens(kv: String) throws {
        let plain = try Self.run(kv: kv, restartAfter: nil)
        #expect(plain.tokens.count == 10 && plain.restarts == 0)
        let midDecode = try Self.run(kv: kv, restartAfter: 4)
        #expect(midDecode.restarts == 1)
        #expect(midDecode.tokens == plain.tokens, "restarted after 4 tokens: \(midDecode.tokens) vs \(plain.tokens)")
        // In the middle of a prompt that goes in chunks of 4 tokens.
        let chunked = try Self.run(kv: kv, restartAfter: nil, prefillBatch: 4)
        let midPrompt = try Self.run(kv: kv, restartAfter: 0, prefillBatch: 4)
        #expect(midPrompt.restarts == 1)
        #expect(midPrompt.tokens == chunked.tokens)
    }
}
