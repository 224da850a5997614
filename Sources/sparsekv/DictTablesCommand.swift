import ArgumentParser
import Foundation
import SparseCoding
import SparseKVEngine

struct DictTablesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tables",
        abstract: "Count atom usage on calibration text and store entropy tables in a dictionary (for --kv csr:...,ec=rans).",
        discussion: """
            Runs the model over windows of the corpus with a CSR cache coded as --kv, counts \
            how often each atom of each dictionary group is picked (online atoms count as one \
            escape symbol), and writes the dictionary again with one static frequency table \
            per group (dictionary format 2). The atoms and the content hash do not change. \
            The calibration text must not be the evaluation text.
            """)

    @OptionGroup var common: ModelOptions

    @Argument(help: "Dictionary file (GGUF) to add the tables to.")
    var path: String

    @Option(parsing: .upToNextOption, help: "Calibration text file(s).")
    var corpus: [String]

    @Option(help: "The CSR coding whose atom usage is counted (no ec=).")
    var kv: String = "csr:16,coef=i8"

    @Option(help: "Most calibration tokens to run the model over (spread evenly over the corpus).")
    var maxTokens: Int = 16384

    @Option(help: "Tokens per model window (each from an empty cache, prefilled in one batch).")
    var window: Int = 1024

    @Option(name: .shortAndLong, help: "Output file (default: the input dictionary, rewritten).")
    var out: String?

    func validate() throws {
        try CalibrationWindows.validate(corpus: corpus, window: window, maxTokens: maxTokens)
    }

    func run() throws {
        let started = Date()
        let (tokenizer, model, dictionary) = try CalibrationWindows.load(dictionary: path, options: common)
        let settings = try CSRSettings(parsing: kv, valueChunks: dictionary.values.chunks)
        guard !settings.entropyCoded, !settings.gapCoded else { throw ValidationError("--kv counts the usage of plain codes: drop ec=") }
        let codec = try CSRCodec(dictionary: dictionary, settings: settings)

        let calibration = try CalibrationWindows(corpus: corpus, tokenizer: tokenizer, window: window, maxTokens: maxTokens)
        let windows = calibration.windows.count
        var keys = dictionary.keys.groups.map { [Int](repeating: 0, count: $0.dictionary.atomCount + 1) }
        var values = dictionary.values.groups.map { [Int](repeating: 0, count: $0.dictionary.atomCount + 1) }
        for (i, tokens) in calibration.windows.enumerated() {
            let cache = model.makeCache(.csr(codec), capacity: window)
            var h = try model.embed(tokens)
            try model.forward(&h, count: window, cache: cache)
            guard let csr = cache as? CSRCache else { throw ValidationError("--kv \(kv) did not make a CSR cache") }
            let usage = csr.atomUsage()
            for g in keys.indices { for j in keys[g].indices { keys[g][j] += usage.keys[g][j] } }
            for g in values.indices { for j in values[g].indices { values[g][j] += usage.values[g][j] } }
            printErr("\r  count \(bar(i + 1, windows)) \(i + 1)/\(windows)", terminator: i + 1 == windows ? "\n" : "")
        }
        let names = calibration.names
        let tables = try CSREntropyTables(keyCounts: keys, valueCounts: values,
                                          source: "\(settings) on \(windows * window) tokens of \(names), windows of \(window)")
        let outPath = out ?? path
        try dictionary.withEntropyTables(tables).write(to: outPath)
        for (name, counts, part) in [("keys", keys, tables.keys), ("values", values, tables.values)] {
            // What the counted indices cost under their own tables, against fixed width.
            var bits = 0.0, n = 0
            for (g, c) in counts.enumerated() {
                for (j, k) in c.enumerated() where k > 0 { bits += Double(k) * part[g].cost(j); n += k }
            }
            let fixed = log2(Double(counts.first?.count ?? 2) - 1).rounded(.up)
            print(String(format: "%@: %d indices counted, %.3f bits/index under the tables (fixed width: %.0f)", name, n, n > 0 ? bits / Double(n) : 0, fixed))
        }
        print(String(format: "wrote %@ (format %d, tables %@…), %.1f s", outPath, dictionary.keyMetric == nil ? 2 : 3, String(tables.contentHash.prefix(16)), Date().timeIntervalSince(started)))
    }
}
