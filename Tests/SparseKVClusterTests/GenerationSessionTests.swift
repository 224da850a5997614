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

    /// Runs a session with a replica of its cache kept from the prompt's transfer and each
    /// decoded token's append payload; after `failAfter` generated tokens the cache is lost
    /// with the states in flight, the replica (cut back by `lag` tokens, as a replica
    /// whose last updates were lost) takes its place, and the session resumes from it.
    static func runFromReplica(kv: String, failAfter: Int, lag: Int) throws -> (tokens: [Int32], restarts: Int, fedAgain: Int) {
        let gguf = try GGUFFile(path: ClusterAssets.model)
        let head = try LlamaModel(gguf: gguf, layers: 0..<0, embeddings: true, head: true)
        let all = 0..<head.config.layerCount
        let layers = try LlamaModel(gguf: gguf, layers: all, embeddings: false, head: false)
        let type: KVCacheType = kv.hasPrefix("csr")
            ? try KVCacheType(parsing: kv, dictionary: try CSRDictionary.load(path: ClusterAssets.dictionary))
            : try KVCacheType(parsing: kv)
        func copy(_ c: any KVCache) throws -> any KVCache {
            let bytes = try c.serialize(layers: all)
            switch type {
            case .csr(let codec): return try CSRCache.deserialize(bytes, capacity: 256, rope: head.rope, codec: codec)
            case .fp16: return try DenseKVCache<Float16>.deserialize(bytes, capacity: 256, rope: head.rope)
            default: return try DenseKVCache<Float>.deserialize(bytes, capacity: 256, rope: head.rope)
            }
        }
        var session = GenerationSession(id: 1, prompt: prompt, maxTokens: 10, sampling: SamplingOptions(), contextLength: 256,
                                        isStop: { _ in false })
        var cache = layers.makeCache(type, capacity: 256)
        var replica: (any KVCache)?
        var action = try session.start(model: head)
        var failed = false, sentAfter = 0
        while case .send(var states) = action {
            if failed { sentAfter += 1 }
            if states.phase == .decode, replica == nil { replica = try copy(cache) }
            if !failed, session.generated.count == failAfter, states.phase == .decode, let r = replica {
                failed = true
                r.truncate(to: r.tokenCount - lag)
                let q = min(r.tokenCount, session.prompt.count + session.generated.count - 1)
                cache = r
                action = try session.resume(at: q, model: head)
                continue
            }
            try layers.forward(&states.hidden, count: states.tokenCount, layers: all, cache: cache)
            if states.phase == .decode, let r = replica, r !== cache {
                try r.applyAppendPayload(try cache.appendPayload(layers: all, tokens: states.startPosition..<states.startPosition + 1))
            }
            states.nextLayer = head.config.layerCount
            action = try session.receive(states, model: head)
        }
        return (session.generated, session.restarts, sentAfter)
    }

    @Test(arguments: ["fp32", "csr:8,coef=i8"])
    func aSessionResumedFromItsReplicaGivesTheUninterruptedTokens(kv: String) throws {
        let plain = try Self.run(kv: kv, restartAfter: nil)
        let current = try Self.runFromReplica(kv: kv, failAfter: 4, lag: 0)
        #expect(current.tokens == plain.tokens, "resumed from an up-to-date replica: \(current.tokens) vs \(plain.tokens)")
        #expect(current.restarts == 1)
        // No prompt states go in again: the token in flight, then the 5 left to generate.
        #expect(current.fedAgain == 1 + 5)
        let behind = try Self.runFromReplica(kv: kv, failAfter: 4, lag: 2)
        #expect(behind.tokens == plain.tokens, "resumed from a replica 2 tokens behind")
        #expect(behind.fedAgain == 3 + 5)
    }
}
