import ArgumentParser
import Foundation
import SparseKVEngine

struct DictMetricCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metric",
        abstract: "Measure the query-aware key metric on calibration text and store it in an existing dictionary.",
        discussion: """
            Runs the model over windows of the corpus, measures the mean query energy per \
            RoPE pair of every (layer, KV head), and writes the dictionary again with that \
            metric (format 3): keys are then coded, by the pursuit, in the metric with the \
            dictionary's atoms as they are (trained in whatever metric they were). \
            `dict train --key-metric query` trains the atoms in the metric as well. The \
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
        guard window >= 16, maxTokens >= window else { throw ValidationError("--window must be >= 16 and --max-tokens >= --window") }
        guard !corpus.isEmpty else { throw ValidationError("give at least one --corpus file") }
    }

    func run() throws {
        let started = Date()
        let (gguf, _) = try common.setUp()
        let tokenizer = try BPETokenizer(gguf: gguf)
        let model = try LlamaModel(gguf: gguf)
        let dictionary = try CSRDictionary.load(path: path)
        try dictionary.check(model: .init(model: model), path: path)
        var tokens: [Int32] = []
        for p in corpus { tokens += tokenizer.encode(try readTextFile(p), addSpecial: false, parseSpecial: false) }
        let available = tokens.count / window, windows = min(available, maxTokens / window)
        guard windows > 0 else { throw ValidationError("the corpus has \(tokens.count) tokens, fewer than one --window of \(window)") }
        let c = model.config, gen = TextGenerator(model: model, cacheType: .fp32, contextLength: window)
        var energy = QueryPairEnergy(layerCount: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim)
        for i in 0..<windows {
            let w = i * available / windows
            let recorder = QueryRecordingCache(
                DenseKVCache<Float>(geometry: model.cacheGeometry(capacity: window), rope: model.rope), energy: energy)
            _ = try gen.prefill(Array(tokens[w * window..<(w + 1) * window]), cache: recorder)
            energy = recorder.energy
            printErr("\r  measure \(bar(i + 1, windows)) \(i + 1)/\(windows)", terminator: i + 1 == windows ? "\n" : "")
        }
        let names = corpus.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ",")
        let metric = try CSRKeyMetric(
            energy: energy, source: "mean query energy per RoPE pair on \(windows * window) tokens of \(names), windows of \(window)")
        var training = dictionary.training
        training["key_metric"] = "query, added by dict metric to atoms trained with key_metric=\(dictionary.training["key_metric"] ?? "l2")"
        let result = try CSRDictionary(model: dictionary.model, keys: dictionary.keys, values: dictionary.values,
                                       training: training, keyMetric: metric)
        try result.write(to: out)
        let w = metric.pairWeights
        print(String(format: "wrote %@ (format 3, content hash %@…), pair weights %.4f to %.2f, %.1f s", out,
                     String(result.contentHash.prefix(16)), w.min() ?? 0, w.max() ?? 0, Date().timeIntervalSince(started)))
    }
}
