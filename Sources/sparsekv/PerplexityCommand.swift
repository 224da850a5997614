import ArgumentParser
import Foundation
import SparseKVEngine

struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a text with llama-perplexity's protocol (non-overlapping windows, second half scored).")

    @OptionGroup var common: ModelOptions

    @Option(name: .shortAndLong, help: "UTF-8 text file to score.")
    var file: String

    @Option(help: "Window (context) length in tokens.")
    var ctx: Int = 1024

    @Option(help: "Score only the first N windows.")
    var chunks: Int?

    @Option(help: kvHelp)
    var kv: String = "fp32"

    @OptionGroup var dictionary: DictionaryOption

    @Flag(help: "Print one JSON object with ppl and tokens scored.")
    var json = false

    func validate() throws {
        guard ctx >= 4 else { throw ValidationError("--ctx must be at least 4") }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be at least 1") }
    }

    func run() throws {
        let (gguf, _) = try common.setUp()
        let tokenizer = try BPETokenizer(gguf: gguf)
        let model = try LlamaModel(gguf: gguf)
        guard ctx <= model.config.contextLength else {
            throw ValidationError("--ctx \(ctx) exceeds the model's context length \(model.config.contextLength)")
        }
        let tokens = tokenizer.encode(try readTextFile(file), addSpecial: false, parseSpecial: false)
        let cacheType = try dictionary.cacheTypes([kv], model: model, modelPath: common.modelPath)[0]
        let evaluator = PerplexityEvaluator(model: model, cacheType: cacheType, contextLength: ctx,
                                            bos: tokenizer.addBOS ? tokenizer.bosID : nil)
        printErr("\(tokens.count) tokens, \(tokens.count / ctx) windows of \(ctx)")
        let result = try evaluator.run(tokens: tokens, maxChunks: chunks) { done, total, ppl in
            printErr(String(format: "\r[%d/%d] ppl %.4f", done, total, ppl), terminator: done == total ? "\n" : "")
        }
        if json {
            print(try jsonString(result))
        } else {
            print(String(format: "perplexity %.4f over %d tokens (%d windows of %d, kv %@) in %.1f s",
                         result.perplexity, result.tokensScored, result.chunks, ctx, result.kvCache, result.seconds))
        }
    }
}
