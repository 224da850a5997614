import ArgumentParser
import Foundation
import SparseCoding
import SparseKVEngine

struct DictMetricCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metric",
        abstract: "Measure the query-aware key metric on calibration text and store it in an existing dictionary.",
        discussion: """
            Runs the model over windows of the corpus, measures the mean query energy per \
            RoPE pair of every layer (over all its query heads: one weight per layer and \
            pair, since a key group's atoms are shared by its KV heads), and writes the \
            dictionary again with that metric (format 3) and each key atom d mapped to \
            sqrt(w) ⊙ d, renormalised: the pursuit then picks the same atoms' span in the \
            query-weighted metric instead of plain squared error (pursuit-only; `dict train \
            --key-metric query` trains the atoms in the metric as well). Every key group \
            must code one layer with s_n = 1. The \
            content hash changes (codes in one metric mean nothing in another), and entropy \
            tables, counted on the old codes, are dropped. The calibration text must not be \
            the evaluation text.
            """)

    @OptionGroup var common: ModelOptions

    @Argument(help: "Dictionary file (GGUF).")
    var path: String

    @Option(parsing: .upToNextOption, help: "Calibration text file(s).")
    var corpus: [String]

    @Option(help: "Most calibration tokens to run the model over (spread evenly over the corpus).")
    var maxTokens: Int = 4096

    @Option(help: "Tokens per model window (each from an empty cache).")
    var window: Int = 1024

    @Option(name: .shortAndLong, help: "Output file.")
    var out: String

    func validate() throws {
        try CalibrationWindows.validate(corpus: corpus, window: window, maxTokens: maxTokens)
    }

    func run() throws {
        let started = Date()
        let (tokenizer, model, dictionary) = try CalibrationWindows.load(dictionary: path, options: common)
        let calibration = try CalibrationWindows(corpus: corpus, tokenizer: tokenizer, window: window, maxTokens: maxTokens)
        let windows = calibration.windows.count
        let c = model.config, gen = TextGenerator(model: model, cacheType: .fp32, contextLength: window)
        var energy = QueryPairEnergy(layerCount: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim)
        for (i, tokens) in calibration.windows.enumerated() {
            let recorder = QueryRecordingCache(
                DenseKVCache<Float>(geometry: model.cacheGeometry(capacity: window), rope: model.rope), energy: energy)
            _ = try gen.prefill(tokens, cache: recorder)
            energy = recorder.energy
            printErr("\r  measure \(bar(i + 1, windows)) \(i + 1)/\(windows)", terminator: i + 1 == windows ? "\n" : "")
        }
        let names = calibration.names
        // One weight per (layer, pair): the heads' mean energies averaged.
        var pooled = [Float]()
        for l in 0..<c.layerCount {
            let e = (0..<c.kvHeadCount).map { energy.meanEnergy(layer: l, kvHead: $0) }
            pooled += (0..<c.headDim / 2).map { i in Float(e.reduce(0) { $0 + $1[i] } / Double(c.kvHeadCount)) }
        }
        var weights = [Float]()
        for l in 0..<c.layerCount {
            let row = pooled[l * c.headDim / 2..<(l + 1) * c.headDim / 2], mean = row.reduce(0, +) / Float(row.count)
            let w = row.map { max($0 / mean, Float(CSRKeyMetric.weightFloor)) }
            for _ in 0..<c.kvHeadCount { weights += w }
        }
        let metric = try CSRKeyMetric(
            layerCount: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim, pairWeights: weights,
            source: "mean query energy per RoPE pair and layer (heads pooled) on \(windows * window) tokens of \(names), windows of \(window)")
        guard dictionary.keys.chunks == 1, dictionary.keys.groups.allSatisfy({ $0.layers.count == 1 }) else {
            throw ValidationError("dict metric maps key atoms per layer: every key group must code one layer whole (s_n = 1)")
        }
        let groups = try dictionary.keys.groups.map { g -> CSRDictionary.Group in
            let s = Array(metric.channelScales(layer: g.layers.lowerBound)[0..<c.headDim])
            let a = g.dictionary.atoms, n = g.dictionary.atomCount, m = g.dictionary.dimension
            var out = [Float](repeating: 0, count: n * m)
            for j in 0..<n { for i in 0..<m { out[j * m + i] = a[j * m + i] * s[i] } }
            return CSRDictionary.Group(layers: g.layers, dictionary: try SparseDictionary(atoms: out, atomCount: n, dimension: m))
        }
        var training = dictionary.training
        training["key_metric"] = "query, added by dict metric to atoms trained with key_metric=\(dictionary.training["key_metric"] ?? "l2")"
        let result = try CSRDictionary(model: dictionary.model, keys: .init(chunks: 1, groups: groups), values: dictionary.values,
                                       training: training, keyMetric: metric)
        try result.write(to: out)
        let w = metric.pairWeights
        print(String(format: "wrote %@ (format 3, content hash %@…), pair weights %.4f to %.2f, %.1f s", out,
                     String(result.contentHash.prefix(16)), w.min() ?? 0, w.max() ?? 0, Date().timeIntervalSince(started)))
    }
}
