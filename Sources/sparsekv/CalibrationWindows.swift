import ArgumentParser
import Foundation
import SparseKVEngine

/// The calibration windows of `dict train`, `dict tables` and `dict metric`: each corpus
/// file tokenized on its own, then up to maxTokens / window windows of `window` tokens, an
/// equal share per file, spread evenly over each (CalibrationPlan).
struct CalibrationWindows {
    /// Each window's tokens, `window` of them.
    let windows: [[Int32]]
    /// The corpus files' names, comma-separated (for the provenance line).
    let names: String
    /// One line per file: name, tokens, windows taken.
    let summary: [String]

    init(corpus: [String], tokenizer: BPETokenizer, window: Int, maxTokens: Int) throws {
        let files = try corpus.map { tokenizer.encode(try readTextFile($0), addSpecial: false, parseSpecial: false) }
        let counts = CalibrationPlan.windowCounts(available: files.map { $0.count / window }, wanted: maxTokens / window)
        windows = CalibrationPlan.windows(files: files, window: window, counts: counts)
        guard !windows.isEmpty else {
            throw ValidationError("the corpus has \(files.reduce(0) { $0 + $1.count }) tokens and no file holds one --window of \(window)")
        }
        names = corpus.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ",")
        summary = zip(corpus, zip(files, counts)).map { path, fc in
            "  \(URL(fileURLWithPath: path).lastPathComponent): \(fc.0.count) tokens, \(fc.1) windows"
        }
    }
}

extension CalibrationWindows {
    /// The option checks `dict tables` and `dict metric` share.
    static func validate(corpus: [String], window: Int, maxTokens: Int) throws {
        guard window >= 16, maxTokens >= window else { throw ValidationError("--window must be >= 16 and --max-tokens >= --window") }
        guard !corpus.isEmpty else { throw ValidationError("give at least one --corpus file") }
    }

    /// What both commands start from: the model, its tokenizer, and the dictionary at
    /// `path`, checked against the model.
    static func load(dictionary path: String, options: ModelOptions)
        throws -> (tokenizer: BPETokenizer, model: LlamaModel, dictionary: CSRDictionary) {
        let (gguf, _) = try options.setUp()
        let tokenizer = try BPETokenizer(gguf: gguf)
        let model = try LlamaModel(gguf: gguf)
        let dictionary = try CSRDictionary.load(path: path)
        try dictionary.check(model: .init(model: model), path: path)
        return (tokenizer, model, dictionary)
    }
}
