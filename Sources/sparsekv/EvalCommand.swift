import ArgumentParser
import Foundation
import SparseKVEngine

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Quality and size of KV caches against the fp32 cache, on the same windows of each text.",
        discussion: """
            For each text and each --kv cache: bits per channel (every byte the cache holds, \
            docs/ARCHITECTURE.md §3), KV bytes per token, perplexity, relative change vs fp32, mean KL \
            divergence of next-token distributions vs fp32, and top-1 agreement with fp32.
            Windows follow llama-perplexity (non-overlapping, second half scored). The first \
            half is prefilled in one batch, the second fed in batches of --decode-batch tokens.
            """)

    @OptionGroup var common: ModelOptions
    @OptionGroup var dictionary: DictionaryOption

    @Option(name: .shortAndLong, parsing: .upToNextOption, help: "UTF-8 text file(s) to evaluate on.")
    var file: [String]

    @Option(parsing: .upToNextOption, help: kvHelp)
    var kv: [String] = ["fp32", "fp16", "kivi4", "kivi2", "csr:16", "csr:8", "csr:4"]

    @Option(help: "Window (context) length in tokens.")
    var ctx: Int = 1024

    @Option(help: "Evaluate only the first N windows of each text.")
    var chunks: Int?

    @Option(help: "Tokens per forward call in the scored half (1 = token by token).")
    var decodeBatch: Int = 16

    @Flag(help: "Print JSON instead of a Markdown table.")
    var json = false

    func validate() throws {
        guard ctx >= 4 else { throw ValidationError("--ctx must be at least 4") }
        guard decodeBatch >= 1 else { throw ValidationError("--decode-batch must be at least 1") }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be at least 1") }
        guard !file.isEmpty, !kv.isEmpty else { throw ValidationError("give at least one --file and one --kv") }
    }

    struct TextResult: Codable {
        var file: String
        var tokens: Int
        var results: [CacheEvaluation]
        /// The CSR dictionary's content hash, when a CSR cache ran.
        var dictionary: String?
        var decodeBatch: Int?
    }

    func run() throws {
        let (gguf, _) = try common.setUp()
        let tokenizer = try BPETokenizer(gguf: gguf)
        let model = try LlamaModel(gguf: gguf)
        guard ctx <= model.config.contextLength else {
            throw ValidationError("--ctx \(ctx) exceeds the model's context length \(model.config.contextLength)")
        }
        let types = try dictionary.cacheTypes(kv, model: model, modelPath: common.modelPath)
        let dictionaryHash = types.lazy.compactMap { t -> String? in
            if case .csr(let codec) = t { return codec.dictionary.contentHash }
            return nil
        }.first
        var evaluator = CacheEvaluator(model: model, contextLength: ctx, bos: tokenizer.addBOS ? tokenizer.bosID : nil)
        evaluator.decodeBatch = decodeBatch
        var all: [TextResult] = []
        for path in file {
            let tokens = tokenizer.encode(try readTextFile(path), addSpecial: false, parseSpecial: false)
            let name = URL(fileURLWithPath: path).lastPathComponent
            printErr("\(name): \(tokens.count) tokens, \(min(tokens.count / ctx, chunks ?? .max)) windows of \(ctx)")
            let results = try evaluator.run(tokens: tokens, caches: types, maxWindows: chunks) { w, n, cache in
                printErr("\r\(name) window \(w)/\(n) \(cache)\u{1B}[K", terminator: "")
            }
            printErr("")
            all.append(TextResult(file: name, tokens: tokens.count, results: results, dictionary: dictionaryHash,
                                  decodeBatch: decodeBatch))
            if !json { print(markdown(all.last!)) }
        }
        if json { print(try jsonString(all)) }
    }

    func markdown(_ r: TextResult) -> String {
        let first = r.results.first
        var lines = [
            "### \(r.file): ctx \(ctx), \(first?.windows ?? 0) windows, \(first?.tokensScored ?? 0) tokens scored, decode batch \(decodeBatch)",
            "",
            "| KV cache | bits/channel | KV bytes/token | perplexity | vs fp32 | mean KL | top-1 agreement |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for e in r.results {
            lines.append(String(format: "| %@ | %.3f | %.0f | %.4f | %+.2f%% | %.5f | %.2f%% |",
                                e.cache, e.bitsPerChannel, e.bytesPerToken, e.perplexity, e.relativeChange * 100,
                                e.meanKL, e.top1Agreement * 100))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
