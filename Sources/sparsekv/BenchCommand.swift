import ArgumentParser
import Foundation
import SparseKVEngine

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks (speed).", subcommands: [SpeedBench.self])
}

/// Prefill and decode throughput, medians over repeats, and where a decode step's time goes.
struct SpeedBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "speed",
        abstract: "Prefill tokens/s and decode tokens/s (median of repeats), with a decode-step time profile.")

    @OptionGroup var common: ModelOptions

    @Option(help: "Prompt length in tokens (taken from --file).")
    var promptTokens: Int = 512

    @Option(help: "Tokens to decode after the prompt.")
    var genTokens: Int = 128

    @Option(help: "Repeats; the median is reported.")
    var repeats: Int = 5

    @Option(name: .shortAndLong, help: "Text the prompt is cut from (default: $SPARSEKV_HOME/texts/cfi-ch4.txt).")
    var file: String?

    @Option(help: kvHelp)
    var kv: String = "fp32"

    @OptionGroup var dictionary: DictionaryOption

    @Flag(help: "Print JSON.")
    var json = false

    struct Report: Codable {
        var threads: Int
        var blasCore: String
        var promptTokens: Int
        var genTokens: Int
        var repeats: Int
        var prefillTokensPerSecond: Double
        var decodeTokensPerSecond: Double
        var prefillRuns: [Double]
        var decodeRuns: [Double]
        /// Share of one decode step's time per part, from a separate profiled run.
        var decodeProfile: [String: Double]
        var decodeStepMilliseconds: Double
        /// The cache's kind, and the bytes it holds after the prompt and the decoded tokens.
        var kvCache: String
        var kvCacheBytes: Int
    }

    func validate() throws {
        guard promptTokens >= 1, genTokens >= 1, repeats >= 1 else { throw ValidationError("counts must be >= 1") }
    }

    func run() throws {
        let (gguf, _) = try common.setUp()
        let tokenizer = try BPETokenizer(gguf: gguf)
        let model = try LlamaModel(gguf: gguf)
        let text = try readTextFile(file ?? Paths.text("cfi-ch4.txt"))
        let all = tokenizer.encode(text, addSpecial: false, parseSpecial: false)
        guard all.count >= promptTokens else {
            throw ValidationError("the text has \(all.count) tokens, fewer than --prompt-tokens \(promptTokens)")
        }
        let prompt = Array(all.prefix(promptTokens))
        let kv = try dictionary.cacheTypes([self.kv], model: model, modelPath: common.modelPath)[0]
        let gen = TextGenerator(model: model, cacheType: kv, contextLength: promptTokens + genTokens + 1)

        func seconds(_ body: () throws -> Void) rethrows -> Double {
            let t = DispatchTime.now().uptimeNanoseconds
            try body()
            return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
        }
        var prefillRates: [Double] = [], decodeRates: [Double] = []
        // One warm-up run (page faults, BLAS thread start) that is not counted.
        for r in -1..<repeats {
            let cache = model.makeCache(kv, capacity: gen.contextLength)
            var logits: [Float] = []
            let tp = try seconds { logits = try gen.prefill(prompt, cache: cache) }
            let td = try seconds {
                for _ in 0..<genTokens {
                    let next = Int32(logits.withUnsafeBufferPointer { Sampler.argmax($0) })
                    logits = try gen.step(next, cache: cache)
                }
            }
            if r >= 0 {
                prefillRates.append(Double(promptTokens) / tp)
                decodeRates.append(Double(genTokens) / td)
            }
            if r >= 0 { printErr("\r[\(r + 1)/\(repeats)]", terminator: r + 1 == repeats ? "\n" : "") }
        }

        // Profiled decode: same work, timers on.
        let profile = ForwardProfile()
        let cache = model.makeCache(kv, capacity: gen.contextLength)
        var logits = try gen.prefill(prompt, cache: cache)
        for _ in 0..<genTokens {
            let next = Int32(logits.withUnsafeBufferPointer { Sampler.argmax($0) })
            var h = try model.embed([next])
            try model.forward(&h, count: 1, cache: cache, profile: profile)
            logits = try model.logits(h, count: 1, profile: profile)
        }
        let total = profile.total
        var shares: [String: Double] = [:]
        for (part, s) in profile.seconds { shares[part.rawValue] = s / total }

        let report = Report(
            threads: ComputeThreads.count, blasCore: BLASRuntime.coreName, promptTokens: promptTokens,
            genTokens: genTokens, repeats: repeats, prefillTokensPerSecond: median(prefillRates),
            decodeTokensPerSecond: median(decodeRates), prefillRuns: prefillRates, decodeRuns: decodeRates,
            decodeProfile: shares, decodeStepMilliseconds: total / Double(genTokens) * 1000,
            kvCache: cache.kind, kvCacheBytes: cache.byteCount)
        if json {
            print(try jsonString(report))
            return
        }
        print(String(format: "prefill (%d tokens): %.1f tok/s   decode (%d tokens): %.1f tok/s   [median of %d, %d threads, OpenBLAS %@]",
                     promptTokens, report.prefillTokensPerSecond, genTokens, report.decodeTokensPerSecond, repeats,
                     report.threads, report.blasCore))
        print(String(format: "KV cache %@: %.1f MB after %d tokens", report.kvCache, Double(report.kvCacheBytes) / 1e6,
                     promptTokens + genTokens))
        print(String(format: "decode step profile (%.2f ms/step):", report.decodeStepMilliseconds))
        for part in ForwardProfile.Part.allCases {
            guard let s = shares[part.rawValue] else { continue }
            print(String(format: "  %-45@ %5.1f%%", part.rawValue, s * 100))
        }
    }
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
