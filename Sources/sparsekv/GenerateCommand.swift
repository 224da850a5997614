import ArgumentParser
import Foundation
import SparseKVCluster
import SparseKVEngine

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Generate text from a prompt, streaming it to stdout.")

    @OptionGroup var common: ModelOptions

    @Option(name: .shortAndLong, help: "Prompt text.")
    var prompt: String?

    @Option(name: .long, help: "Read the prompt from this file.")
    var promptFile: String?

    @Option(name: .short, help: "Tokens to generate.")
    var n: Int = 64

    @Flag(help: "Wrap the prompt in the model's chat template (ChatML) and stop at end of turn.")
    var chat = false

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temp: Float = 0

    @Option(help: "Top-k sampling cut (0 = off).")
    var topK: Int = 40

    @Option(help: "Top-p (nucleus) sampling cut (1 = off).")
    var topP: Float = 0.95

    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0

    @Option(help: kvHelp)
    var kv: String = "fp32"

    @OptionGroup var dictionary: DictionaryOption

    @Option(help: "Context length (positions) of the session.")
    var ctx: Int?

    @Flag(help: "Tokenize special tokens such as <|im_start|> in the prompt as plain text (by default they are parsed, as llama.cpp does).")
    var noSpecial = false

    @Flag(help: "Keep generating past the end-of-generation token.")
    var ignoreEos = false

    @Flag(help: "Print one JSON object (prompt ids, generated ids, text, timings) instead of streaming.")
    var json = false

    @Option(help: ArgumentHelp("Run on a cluster: the coordinator's endpoint, e.g. tcp://127.0.0.1:5555.",
                               discussion: "The coordinator's --kv, --ctx and model apply; the text comes at the end, not streamed."))
    var cluster: String?

    @OptionGroup(title: "Cluster security (with --cluster)") var security: SecurityOptions

    func validate() throws {
        guard (prompt == nil) != (promptFile == nil) else { throw ValidationError("give exactly one of -p TEXT or --prompt-file PATH") }
        guard n >= 0 else { throw ValidationError("-n must be >= 0") }
        guard temp >= 0 else { throw ValidationError("--temp must be >= 0") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard !(noSpecial && cluster != nil) else {
            throw ValidationError("--no-special works in one process only: the coordinator parses special tokens in every prompt")
        }
        guard !(noSpecial && chat) else { throw ValidationError("--no-special cannot go with --chat: the chat template is made of special tokens") }
    }

    func run() throws {
        if let cluster { return try runOnCluster(cluster) }
        let (gguf, logger) = try common.setUp()
        let tokenizer = try BPETokenizer(gguf: gguf)
        let loadStart = Date()
        let model = try LlamaModel(gguf: gguf)
        logger.debug("model loaded in \(String(format: "%.2f", Date().timeIntervalSince(loadStart))) s, \(model.weightBytes / 1_000_000) MB of weights")

        var text = try prompt ?? readTextFile(promptFile!)
        if chat { text = tokenizer.applyChatTemplate(messages: [(role: "user", content: text)], addGenerationPrompt: true) }
        let ids = tokenizer.encode(text, addSpecial: true, parseSpecial: chat || !noSpecial)
        guard !ids.isEmpty else { throw ValidationError("the prompt is empty after tokenization") }

        let cacheType = try dictionary.cacheTypes([kv], model: model, modelPath: common.modelPath)[0]
        let generator = TextGenerator(model: model, cacheType: cacheType, contextLength: ctx)
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        let sampling = SamplingOptions(temperature: temp, topK: topK, topP: topP, seed: seed)
        var result = try generator.generate(
            prompt: ids, maxTokens: n, sampling: sampling,
            isStop: { !ignoreEos && tokenizer.isEndOfGeneration($0) },
            onToken: { id in
                guard !json else { return }
                let piece = decoder.feed(id)
                if !piece.isEmpty {
                    FileHandle.standardOutput.write(piece.data(using: .utf8)!)
                }
            })
        result.text = tokenizer.decode(result.generatedTokens)
        if json {
            print(try jsonString(result))
        } else {
            // Same unbuffered handle as the streamed pieces, so the text ends before the stats line.
            FileHandle.standardOutput.write((decoder.flush() + "\n").data(using: .utf8)!)
        }
        printErr(String(format: "prefill: %d tokens, %.1f tok/s | decode: %d tokens, %.1f tok/s | kv %@ %d bytes | stop: %@",
                        result.promptTokens.count, result.prefillTokensPerSecond, result.generatedTokens.count,
                        result.decodeTokensPerSecond, result.kvCache, result.kvCacheBytes, result.stopReason))
    }

    func runOnCluster(_ endpoint: String) throws {
        let text = try prompt ?? readTextFile(promptFile!)
        let stop = StopSignal()
        let sources = stopOnSignals(stop)
        defer { sources.forEach { $0.cancel() } }
        let client = try ClusterClient(coordinator: endpoint, stop: stop, security: try security.security())
        let before = try client.stats().traffic
        let r = try client.generate(GenerateRequestBody(
            prompt: text, chat: chat, maxTokens: n, temperature: temp, topK: topK, topP: topP, seed: seed, ignoreEOS: ignoreEos))
        let prefillS = Double(r.prefillNanoseconds) / 1e9, decodeS = Double(r.decodeNanoseconds) / 1e9
        let steps = max(r.generatedTokens.count - 1, 0)
        let result = ClusterGenerationResult(
            promptTokens: r.promptTokens, generatedTokens: r.generatedTokens, text: r.text,
            prefillSeconds: prefillS, decodeSeconds: decodeS,
            prefillTokensPerSecond: Double(r.promptTokens.count) / max(prefillS, 1e-9),
            decodeTokensPerSecond: steps > 0 ? Double(steps) / max(decodeS, 1e-9) : 0,
            stopReason: r.stopReason, kvCache: r.kvCache, kvCacheBytes: Int(r.kvCacheBytes),
            activationBytesSent: r.activationBytesSent, activationBytesReceived: r.activationBytesReceived,
            kvTransferBytes: r.kvTransferBytes, kvTransferSeconds: Double(r.kvTransferNanoseconds) / 1e9,
            kvBaselineBytes: r.kvBaselineBytes, kvBaselineSeconds: Double(r.kvBaselineNanoseconds) / 1e9,
            coordinatorTraffic: ClusterGenerationResult.delta(before, try client.stats().traffic))
        if json {
            print(try jsonString(result))
        } else {
            FileHandle.standardOutput.write((r.text + "\n").data(using: .utf8)!)
        }
        printErr(String(format: "prefill: %d tokens, %.1f tok/s | decode: %d tokens, %.1f tok/s | kv %@, %d bytes on the workers | stop: %@",
                        result.promptTokens.count, result.prefillTokensPerSecond, result.generatedTokens.count,
                        result.decodeTokensPerSecond, result.kvCache, result.kvCacheBytes, result.stopReason))
        if r.kvTransferBytes > 0 {
            // A handoff is timed per session; a drain's transfers are timed in the drain's
            // own reply (`cluster drain --json`), not here.
            let time = r.kvTransferNanoseconds > 0
                ? String(format: " in %.1f ms", Double(r.kvTransferNanoseconds) / 1e6)
                : " (by a drain: see the drain's report for its timing)"
            printErr(String(format: "kv moved between workers for this session: %llu bytes", r.kvTransferBytes) + time)
            if r.kvBaselineBytes > 0 {
                printErr(String(format: "the same kv in dense fp16 (measured baseline): %llu bytes in %.1f ms", r.kvBaselineBytes,
                                Double(r.kvBaselineNanoseconds) / 1e6))
            }
        }
        let traffic = TrafficCategory.allCases.compactMap { c -> String? in
            guard let t = result.coordinatorTraffic[c.rawValue], t.sentBytes + t.receivedBytes > 0 else { return nil }
            return "\(c.rawValue) \(t.sentBytes) B sent / \(t.receivedBytes) B received"
        }
        printErr("coordinator traffic during the request: " + traffic.joined(separator: ", "))
    }
}

/// `generate --cluster --json` output: the fields of a local run's ``GenerationResult``
/// plus the activation bytes the coordinator counted for the request.
struct ClusterGenerationResult: Codable {
    var promptTokens: [Int32]
    var generatedTokens: [Int32]
    var text: String
    var prefillSeconds: Double
    var decodeSeconds: Double
    var prefillTokensPerSecond: Double
    var decodeTokensPerSecond: Double
    var stopReason: String
    var kvCache: String
    var kvCacheBytes: Int
    var activationBytesSent: UInt64
    var activationBytesReceived: UInt64
    /// KV moved between workers for this session (a prefill -> decode handoff, a drain),
    /// as the receivers counted the kvTransfer messages, and the handoff wait.
    var kvTransferBytes: UInt64
    var kvTransferSeconds: Double
    /// The handoff's dense fp16 baseline, sent after the move (coordinator --handoff-baseline).
    var kvBaselineBytes: UInt64
    var kvBaselineSeconds: Double
    /// The coordinator's byte counters (all peers) during the request, by category; they
    /// include any other request served at the same time.
    var coordinatorTraffic: [String: TrafficCount]

    static func delta(_ a: TrafficSnapshot, _ b: TrafficSnapshot) -> [String: TrafficCount] {
        var out: [String: TrafficCount] = [:]
        for c in TrafficCategory.allCases {
            func total(_ s: TrafficSnapshot) -> TrafficCount {
                s.byPeer.values.reduce(TrafficCount()) { t, p in
                    TrafficCount(sentBytes: t.sentBytes + p[c].sentBytes, sentMessages: t.sentMessages + p[c].sentMessages,
                                 receivedBytes: t.receivedBytes + p[c].receivedBytes, receivedMessages: t.receivedMessages + p[c].receivedMessages)
                }
            }
            let x = total(a), y = total(b)
            out[c.rawValue] = TrafficCount(sentBytes: y.sentBytes &- x.sentBytes, sentMessages: y.sentMessages &- x.sentMessages,
                                           receivedBytes: y.receivedBytes &- x.receivedBytes, receivedMessages: y.receivedMessages &- x.receivedMessages)
        }
        return out
    }
}
