import ArgumentParser
import Foundation
import SparseCoding
import SparseKVEngine

struct DictTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a CSR dictionary (NeuralDict) for a model on calibration text.",
        discussion: """
            Runs the model over the corpus, collects every layer's keys (before RoPE) and \
            values, groups adjacent layers whose distributions are close (PCA to 2-D, \
            200x200 histograms, Jensen-Shannon divergence under --delta1/--delta2), and \
            trains one dictionary of N atoms per group with NeuralDict: k-means \
            initialisation, then Adam on the MSE of the Matching Pursuit reconstruction plus \
            the adaptive diversity term, atoms renormalised after every step. With \
            --key-metric query keys are trained in the query-aware metric: each RoPE pair \
            of a (layer, KV head) weighted by the mean energy of the queries that read it, \
            measured on the same calibration pass and stored in the file (format 3); \
            --key-metric l2 (the default) trains on plain squared error. The calibration text \
            must not be the evaluation text.
            """)

    @OptionGroup var common: ModelOptions

    @Option(parsing: .upToNextOption, help: "Calibration text file(s).")
    var corpus: [String]

    @Option(help: "N, atoms per key dictionary group.")
    var atoms: Int = 1024

    @Option(help: "N for value dictionary groups (values are coded in chunks of headDim / s_n channels).")
    var valueAtoms: Int = 512

    @Option(help: "MP pairs per key vector while training.")
    var sparsity: Int = 8

    @Option(help: "MP pairs per value chunk while training (default: sparsity / value chunks).")
    var valueSparsity: Int?

    @Option(help: "Metric keys are trained and coded in: query (RoPE pairs weighted by query energy) or l2.")
    var keyMetric: KeyMetricChoice = .l2

    @Option(help: "s_n for keys: chunks a key head vector is coded in.")
    var keyChunks: Int = 1

    @Option(help: "s_n for values.")
    var valueChunks: Int = 2

    @Option(help: "Most calibration tokens to run the model over (an equal share per corpus file, spread evenly over each).")
    var maxTokens: Int = 32768

    @Option(help: ArgumentHelp(
        "Most key/value rows kept per layer while collecting.",
        discussion: "A uniform sample of all (token, KV head) rows read (reservoir sampling, the same rows in every layer), so "
            + "the corpus may be far larger than memory: about rows x head dim x 8 bytes x layers."))
    var maxRows: Int = 98_304

    @Option(help: "Tokens per model window while collecting (each from an empty cache).")
    var window: Int = 1024

    @Option(help: "Layer grouping: largest JS divergence between any two layers of a group.")
    var delta1: Double = LayerGroupingOptions().delta1

    @Option(help: "Layer grouping: largest sum of JS divergence over adjacent layers of a group.")
    var delta2: Double = LayerGroupingOptions().delta2

    @Option(help: "Optimisation steps per group.")
    var steps: Int = 300

    @Option(help: "Vectors per step.")
    var batch: Int = 4096

    @Option(help: "Adam learning rate.")
    var learningRate: Float = NeuralDictOptions(atomCount: 1, sparsity: 1).learningRate

    @Option(help: "Fraction of vectors held out to measure test MSE.")
    var heldOut: Double = 0.1

    @Option(help: "Random seed (sampling, k-means, batches).")
    var seed: UInt64 = 1

    @Option(name: .shortAndLong, help: "Output file (default: $SPARSEKV_HOME/dicts/<model>.csr.gguf).")
    var out: String?

    func validate() throws {
        for n in [atoms, valueAtoms] where n < 2 || n > SparseDictionary.maxAtomCount {
            throw ValidationError("--atoms and --value-atoms must be 2...\(SparseDictionary.maxAtomCount)")
        }
        guard sparsity >= 1, (valueSparsity ?? 1) >= 1 else { throw ValidationError("sparsities must be at least 1") }
        guard keyChunks >= 1, valueChunks >= 1 else { throw ValidationError("chunks must be at least 1") }
        try CalibrationWindows.validate(corpus: corpus, window: window, maxTokens: maxTokens)
        guard maxRows >= 1 else { throw ValidationError("--max-rows must be at least 1") }
        guard steps >= 0, batch >= 1, heldOut > 0, heldOut < 1 else { throw ValidationError("bad --steps, --batch or --held-out") }
    }

    func run() throws {
        let started = Date()
        let (gguf, _) = try common.setUp(openBLASThreads: common.threads)
        let tokenizer = try BPETokenizer(gguf: gguf)
        let model = try LlamaModel(gguf: gguf)
        let c = model.config
        guard c.headDim % keyChunks == 0, c.headDim % valueChunks == 0 else {
            throw ValidationError("head dim \(c.headDim) is not divisible by the chunk counts")
        }
        let outPath = out ?? DictionaryOption.defaultPath(model: common.modelPath)

        // MARK: Collect
        let calibration = try CalibrationWindows(corpus: corpus, tokenizer: tokenizer, window: window, maxTokens: maxTokens)
        let picked = calibration.windows.count * window
        let rows = picked * c.kvHeadCount
        let kept = min(rows, maxRows)
        printErr("corpus: collecting K/V over \(calibration.windows.count) windows of \(window) (\(picked) tokens, \(rows) rows per layer)")
        calibration.summary.forEach { printErr($0) }
        if kept < rows {
            printErr("  streaming: keeping a uniform sample of \(kept) rows per layer (--max-rows), "
                     + String(format: "%.1f GB", Double(kept * c.headDim * 2 * 4 * model.loadedLayers.count) / 1e9))
        }
        let t0 = Date()
        let samples = try KVSampleCollector.collect(model: model, tokens: calibration.windows.flatMap { $0 }, window: window,
                                                    keepRows: maxRows, seed: seed) { done, total in
            printErr("\r  collect \(bar(done, total)) \(done)/\(total)", terminator: done == total ? "\n" : "")
        }
        let collectSeconds = Date().timeIntervalSince(t0)
        let names = calibration.names
        let metric: CSRKeyMetric? = keyMetric == .l2 ? nil : try CSRKeyMetric(
            energy: samples.queryEnergy, source: "mean query energy per RoPE pair on \(picked) tokens of \(names), windows of \(window)")
        if let metric {
            let w = metric.pairWeights
            printErr(String(format: "key metric: query energy per RoPE pair, weights %.4f to %.2f (mean 1 per layer and KV head)",
                            w.min() ?? 0, w.max() ?? 0))
        }

        // MARK: Group and train
        let groupOptions = LayerGroupingOptions(delta1: delta1, delta2: delta2, seed: seed)
        var parts: [CSRDictionary.Part] = []
        var summary: [String] = []
        var trainSeconds = 0.0
        for (isKeys, chunks, s) in [(true, keyChunks, sparsity), (false, valueChunks, valueSparsity ?? max(1, sparsity / valueChunks))] {
            let name = isKeys ? "keys" : "values"
            let m = c.headDim / chunks
            let perLayer = samples.layers.map { l in
                let data = samples.vectors(layer: l, keys: isKeys, chunks: chunks)!.data
                return isKeys ? metric?.scaledKeys(data, layer: l) ?? data : data
            }
            let grouping = try LayerGrouping.group(layers: perLayer, dimension: m, options: groupOptions)
            printErr("\(name): s_n = \(chunks), m = \(m); PCA plane explains \(String(format: "%.1f", grouping.explainedVariance * 100))% of the variance")
            printErr("  JS divergence of adjacent layers: " + (1..<grouping.layerCount).map { String(format: "%.3f", grouping.js($0 - 1, $0)) }.joined(separator: " "))
            printErr("  groups: " + grouping.groups.map { "\($0.lowerBound)-\($0.upperBound - 1)" }.joined(separator: ", "))
            var groups: [CSRDictionary.Group] = []
            for (gi, layers) in grouping.groups.enumerated() {
                var data: [Float] = []
                for l in layers { data += perLayer[l] }
                let count = data.count / m
                var options = NeuralDictOptions(atomCount: isKeys ? atoms : valueAtoms, sparsity: s)
                options.steps = steps
                options.batchSize = batch
                options.learningRate = learningRate
                options.heldOutFraction = heldOut
                options.seed = seed &+ UInt64(gi)
                let label = "  \(name) \(gi + 1)/\(grouping.groups.count) layers \(layers.lowerBound)-\(layers.upperBound - 1)"
                let (dict, report) = try NeuralDictTrainer.train(vectors: data, count: count, dimension: m, options: options) { p in
                    printErr("\r\(label) \(progressText(p))\u{1B}[K", terminator: "")
                }
                printErr("")
                trainSeconds += report.seconds
                groups.append(.init(layers: layers, dictionary: dict, trainMSE: report.trainMSE, testMSE: report.testMSE))
                summary.append(String(format: "| %@ | %d-%d | %d / %d | %.5f | %.5f | %.5f | %.4f | %.1f |", name, layers.lowerBound,
                                      layers.upperBound - 1, report.trainCount, report.testCount, report.initialTestMSE,
                                      report.trainMSE, report.testMSE, report.testRelativeError, report.seconds))
            }
            parts.append(CSRDictionary.Part(chunks: chunks, groups: groups))
        }

        // MARK: Write
        let training: [String: String] = [
            "corpus": names, "key_metric": keyMetric.rawValue,
            "tokens": "\(picked)", "rows_per_layer": "\(samples.rowCount)", "key_atoms": "\(atoms)", "value_atoms": "\(valueAtoms)", "window": "\(window)", "key_sparsity": "\(sparsity)",
            "value_sparsity": "\(valueSparsity ?? max(1, sparsity / valueChunks))", "steps": "\(steps)",
            "batch": "\(batch)", "learning_rate": "\(learningRate)", "held_out": "\(heldOut)", "seed": "\(seed)",
            "delta1": "\(delta1)", "delta2": "\(delta2)", "collect_seconds": String(format: "%.1f", collectSeconds),
            "train_seconds": String(format: "%.1f", trainSeconds),
        ]
        let dictionary = try CSRDictionary(model: .init(model: model), keys: parts[0], values: parts[1], training: training,
                                           keyMetric: metric)
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: outPath).deletingLastPathComponent().path,
                                                withIntermediateDirectories: true)
        try dictionary.write(to: outPath)
        print("| part | layers | train / test vectors | test MSE after k-means | train MSE | test MSE | test rel. error | seconds |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        summary.forEach { print($0) }
        print(String(format: "\nwrote %@ (content hash %@…), %.1f s in all: %.1f s collecting, %.1f s training",
                     outPath, String(dictionary.contentHash.prefix(16)), Date().timeIntervalSince(started), collectSeconds, trainSeconds))
    }
}

/// A 20-character bar for done / total.
func bar(_ done: Int, _ total: Int) -> String {
    let filled = total > 0 ? min(20, done * 20 / total) : 20
    return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 20 - filled) + "]"
}

/// One progress line of NeuralDict training.
func progressText(_ p: NeuralDictProgress) -> String {
    switch p.phase {
    case .kmeans(let i, let n):
        return "k-means \(bar(i, n)) \(i)/\(n) mse \(String(format: "%.5f", p.mse))"
    case .training:
        var s = "train \(bar(p.step, p.totalSteps)) \(p.step)/\(p.totalSteps) mse \(String(format: "%.5f", p.mse)) beta \(String(format: "%.3f", p.beta))"
        if let h = p.heldOutMSE { s += " held-out \(String(format: "%.5f", h))" }
        return s
    }
}
