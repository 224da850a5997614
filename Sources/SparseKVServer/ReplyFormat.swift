import Foundation

/// The JSON of completion replies and stream chunks, as OpenAI shapes them, plus the
/// `sparsekv` extension object (KV cache, bytes on the wire).
public struct ReplyFormat: Sendable {
    public let kind: CompletionKind
    public let id: String
    public let created: Int
    public let model: String

    public init(kind: CompletionKind, id: String, created: Int, model: String) {
        self.kind = kind
        self.id = id
        self.created = created
        self.model = model
    }

    /// OpenAI's finish_reason: "stop" (end of turn or a stop sequence), "length" (token
    /// budget or context).
    public static func finishReason(_ summary: GenerationSummary, stopSequenceHit: Bool) -> String {
        if stopSequenceHit { return "stop" }
        switch summary.stopReason {
        case "length", "context": return "length"
        default: return "stop"
        }
    }

    public static func usage(_ s: GenerationSummary) -> [String: Any] {
        ["prompt_tokens": s.promptTokens, "completion_tokens": s.completionTokens, "total_tokens": s.promptTokens + s.completionTokens]
    }

    /// `kv_cache_bytes_per_worker` maps each worker id to the session's KV bytes there, as
    /// the workers reported them (a cluster only).
    public static func sparsekv(_ s: GenerationSummary) -> [String: Any] {
        var out: [String: Any] = [
            "kv_cache": s.kvCache, "kv_cache_bytes": s.kvCacheBytes, "workers": s.workers,
            "activation_bytes_sent": s.activationBytesSent, "activation_bytes_received": s.activationBytesReceived,
            "kv_transfer_bytes": s.kvTransferBytes, "stop_reason": s.stopReason,
            "prefill_ms": (s.prefillSeconds * 1e6).rounded() / 1e3, "decode_ms": (s.decodeSeconds * 1e6).rounded() / 1e3,
        ]
        if s.workers > 0 {
            out["kv_cache_bytes_per_worker"] = Dictionary(s.kvBytesByWorker.map { ($0.worker, $0.bytes) }, uniquingKeysWith: +)
        }
        return out
    }

    private var object: String {
        switch kind {
        case .chat: "chat.completion"
        case .text: "text_completion"
        }
    }

    /// The whole reply of a non-streamed request.
    public func reply(text: String, summary: GenerationSummary, finishReason: String) -> [UInt8] {
        let choice: [String: Any]
        switch kind {
        case .chat:
            choice = ["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": finishReason, "logprobs": NSNull()]
        case .text:
            choice = ["index": 0, "text": text, "finish_reason": finishReason, "logprobs": NSNull()]
        }
        return Self.json(["id": id, "object": object, "created": created, "model": model, "choices": [choice],
                          "usage": Self.usage(summary), "sparsekv": Self.sparsekv(summary)])
    }

    /// A stream chunk: a piece of text (`finishReason` nil), or the last chunk of the
    /// choice (`piece` nil) which also carries usage and the sparsekv object.
    public func chunk(piece: String?, finishReason: String? = nil, summary: GenerationSummary? = nil, first: Bool = false) -> [UInt8] {
        var choice: [String: Any] = ["index": 0, "finish_reason": finishReason ?? NSNull(), "logprobs": NSNull()]
        switch kind {
        case .chat:
            var delta: [String: Any] = [:]
            if first { delta["role"] = "assistant" }
            if let piece { delta["content"] = piece }
            choice["delta"] = delta
        case .text:
            choice["text"] = piece ?? ""
        }
        var out: [String: Any] = ["id": id, "object": object + (kind == .chat ? ".chunk" : ""), "created": created, "model": model,
                                  "choices": [choice]]
        if let summary {
            out["usage"] = Self.usage(summary)
            out["sparsekv"] = Self.sparsekv(summary)
        }
        return Self.json(out)
    }

    /// The chunk `stream_options.include_usage` asks for: no choices, the usage.
    public func usageChunk(_ summary: GenerationSummary) -> [UInt8] {
        Self.json(["id": id, "object": object + (kind == .chat ? ".chunk" : ""), "created": created, "model": model,
                   "choices": [Any](), "usage": Self.usage(summary)])
    }

    /// An error inside a stream, after the 200 status went out.
    public static func streamError(_ e: APIError) -> [UInt8] { e.json }

    static func json(_ object: [String: Any]) -> [UInt8] {
        // Only strings, numbers, arrays, dictionaries and NSNull go in, which always encode.
        (try? [UInt8](JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))) ?? Array("{}".utf8)
    }
}
