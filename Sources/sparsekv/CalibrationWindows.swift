import ArgumentParser
import Foundation
import SparseKVEngine

/// The calibration windows of `dict tables` and `dict metric`: the corpus files tokenized
/// one after another, then up to maxTokens / window windows of `window` tokens spread
/// evenly over them.
struct CalibrationWindows {
    /// Each window's tokens, `window` of them.
    let windows: [[Int32]]
    /// The corpus files' names, comma-separated (for the provenance line).
    let names: String

    init(corpus: [String], tokenizer: BPETokenizer, window: Int, maxTokens: Int) throws {
        var tokens: [Int32] = []
        for p in corpus { tokens += tokenizer.encode(try readTextFile(p), addSpecial: false, parseSpecial: false) }
        let available = tokens.count / window, count = min(available, maxTokens / window)
        guard count > 0 else { throw ValidationError("the corpus has \(tokens.count) tokens, fewer than one --window of \(window)") }
        windows = (0..<count).map { i in
            let w = i * available / count
            return Array(tokens[w * window..<(w + 1) * window])
        }
        names = corpus.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ",")
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
