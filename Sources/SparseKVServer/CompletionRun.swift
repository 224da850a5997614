import Hummingbird
import Logging
import SparseKVEngine

/// Consumes one generation's events: assembles the text (stop sequences, whole
/// characters), records metrics, and either collects the reply or streams it as
/// server-sent events, one chunk per sampled token.
struct CompletionRun: Sendable {
    let handle: GenerationHandle
    let tokenizer: BPETokenizer
    let stops: [String]
    let metrics: ServerMetrics

    /// Per-event bookkeeping shared by both modes.
    private struct State {
        var assembler: TextAssembler
        var tokens = 0
        let arrived = ContinuousClock.now
        var last: ContinuousClock.Instant?
    }

    /// Feeds one token; returns its text and records latencies. After a stop sequence it
    /// cancels the generation and returns nil for later tokens.
    private func feed(_ id: Int32, _ s: inout State) -> String? {
        guard !s.assembler.stopped else { return nil }
        let now = ContinuousClock.now
        if let last = s.last { metrics.decodeToken(now - last) } else { metrics.prefill(now - s.arrived) }
        s.last = now
        s.tokens += 1
        let piece = s.assembler.feed(id)
        if s.assembler.stopped { handle.cancel() }
        return piece
    }

    private func close(_ summary: GenerationSummary, _ s: inout State) -> (String, GenerationSummary, String) {
        let tail = s.assembler.finish()
        var summary = summary
        summary.completionTokens = s.tokens
        metrics.tokens(prompt: summary.promptTokens, generated: s.tokens)
        return (tail, summary, ReplyFormat.finishReason(summary, stopSequenceHit: s.assembler.stopped))
    }

    /// Waits for the whole generation.
    func collect() async throws -> (text: String, summary: GenerationSummary, finishReason: String) {
        var s = State(assembler: TextAssembler(tokenizer: tokenizer, stops: stops))
        do {
            for try await event in handle.events {
                switch event {
                case .token(let id): _ = feed(id, &s)
                case .finished(let summary):
                    let (_, sum, finish) = close(summary, &s)
                    return (s.assembler.text, sum, finish)
                }
            }
        } catch {
            handle.cancel()
            throw error
        }
        throw APIError.generationFailed("the generation ended without a summary")
    }

    /// Streams the generation: a first chunk (chat: the role), one chunk per token, a
    /// last chunk with finish_reason, usage and the sparsekv object, the usage chunk if
    /// asked, then `data: [DONE]`. A client that goes away cancels the generation.
    func stream(format: ReplyFormat, includeUsage: Bool, writer: inout any ResponseBodyWriter, logger: Logger) async throws {
        var s = State(assembler: TextAssembler(tokenizer: tokenizer, stops: stops))
        func send(_ json: [UInt8], _ writer: inout any ResponseBodyWriter) async throws {
            try await writer.write(ByteBuffer(bytes: ServerSentEvents.event(json)))
        }
        do {
            if format.kind == .chat { try await send(format.chunk(piece: "", first: true), &writer) }
            for try await event in handle.events {
                switch event {
                case .token(let id):
                    guard let piece = feed(id, &s) else { continue }
                    try await send(format.chunk(piece: piece), &writer)
                case .finished(let summary):
                    let (tail, sum, finish) = close(summary, &s)
                    if !tail.isEmpty { try await send(format.chunk(piece: tail), &writer) }
                    try await send(format.chunk(piece: nil, finishReason: finish, summary: sum), &writer)
                    if includeUsage { try await send(format.usageChunk(sum), &writer) }
                }
            }
        } catch let e as APIError {
            handle.cancel()
            logger.error("stream failed: \(e.message)")
            try await send(e.json, &writer)
        } catch {
            // The client went away (a write failed), or the backend failed.
            handle.cancel()
            logger.info("stream ended early: \(error.localizedDescription)")
            throw error
        }
        try await writer.write(ByteBuffer(bytes: ServerSentEvents.done))
    }
}
