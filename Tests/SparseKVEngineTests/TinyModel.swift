import Foundation
@testable import SparseKVEngine

/// A tiny random llama model written as a real GGUF file (dim 64, 4 heads, 2 KV heads,
/// 3 layers, vocab 100) for fast shape and equivalence tests.
struct TinyModel {
    static let config = LlamaConfig(
        vocabularySize: 100, embeddingLength: 64, feedForwardLength: 96, layerCount: 3, headCount: 4,
        kvHeadCount: 2, ropeFreqBase: 10000, rmsEpsilon: 1e-5, contextLength: 256, tiedEmbeddings: true)

    /// Writes the model to a temporary file and returns its path; the caller removes it.
    static func write(seed: UInt64 = 7, weightType: GGMLType = .f32, untied: Bool = false) throws -> String {
        var rng = SeededGenerator(seed: seed)
        func random(_ n: Int, scale: Float) -> [Float] {
            (0..<n).map { _ in Float.random(in: -1...1, using: &rng) * scale }
        }
        let c = config
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("llama.block_count", .uint32(UInt32(c.layerCount)))
        w.set("llama.embedding_length", .uint32(UInt32(c.embeddingLength)))
        w.set("llama.feed_forward_length", .uint32(UInt32(c.feedForwardLength)))
        w.set("llama.attention.head_count", .uint32(UInt32(c.headCount)))
        w.set("llama.attention.head_count_kv", .uint32(UInt32(c.kvHeadCount)))
        w.set("llama.rope.freq_base", .float32(c.ropeFreqBase))
        w.set("llama.attention.layer_norm_rms_epsilon", .float32(c.rmsEpsilon))
        w.set("llama.context_length", .uint32(UInt32(c.contextLength)))
        w.set("llama.vocab_size", .uint32(UInt32(c.vocabularySize)))
        let d = c.embeddingLength, kv = c.kvDim, f = c.feedForwardLength
        try w.addTensor(name: "token_embd.weight", shape: [d, c.vocabularySize], floats: random(d * c.vocabularySize, scale: 1), as: weightType)
        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            try w.addTensor(name: p + "attn_norm.weight", shape: [d], floats: random(d, scale: 0.2).map { 1 + $0 })
            try w.addTensor(name: p + "attn_q.weight", shape: [d, d], floats: random(d * d, scale: 0.3), as: weightType)
            try w.addTensor(name: p + "attn_k.weight", shape: [d, kv], floats: random(d * kv, scale: 0.3), as: weightType)
            try w.addTensor(name: p + "attn_v.weight", shape: [d, kv], floats: random(d * kv, scale: 0.3), as: weightType)
            try w.addTensor(name: p + "attn_output.weight", shape: [d, d], floats: random(d * d, scale: 0.1), as: weightType)
            try w.addTensor(name: p + "ffn_norm.weight", shape: [d], floats: random(d, scale: 0.2).map { 1 + $0 })
            try w.addTensor(name: p + "ffn_gate.weight", shape: [d, f], floats: random(d * f, scale: 0.2), as: weightType)
            try w.addTensor(name: p + "ffn_up.weight", shape: [d, f], floats: random(d * f, scale: 0.2), as: weightType)
            try w.addTensor(name: p + "ffn_down.weight", shape: [f, d], floats: random(f * d, scale: 0.1), as: weightType)
        }
        try w.addTensor(name: "output_norm.weight", shape: [d], floats: random(d, scale: 0.2).map { 1 + $0 })
        if untied {
            try w.addTensor(name: "output.weight", shape: [d, c.vocabularySize], floats: random(d * c.vocabularySize, scale: 0.5), as: weightType)
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tiny-\(UUID().uuidString).gguf").path
        try w.write(to: path)
        return path
    }
}

/// Paths of the real model and texts, when scripts/setup.sh has fetched them.
enum RealAssets {
    static var home: String {
        ProcessInfo.processInfo.environment["SPARSEKV_HOME"]
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/sparsekv").path
    }
    static var model: String { home + "/models/SmolLM2-135M-Instruct.Q4_1.gguf" }
    /// True when the model is there, and always under CI (CI=true), where a missing
    /// model must fail the real-model tests rather than skip them.
    static var available: Bool {
        FileManager.default.fileExists(atPath: model) || ProcessInfo.processInfo.environment["CI"] != nil
    }
    static func text(_ name: String) -> String { home + "/texts/" + name }
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}
