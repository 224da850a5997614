import SparseKVEngine

/// Turns a parsed request into a ``GenerationJob``: the chat template (ChatML, with the
/// model's default system prompt) for chat, special tokens parsed as llama-server does,
/// the prompt checked against the context.
public struct JobPlanner: Sendable {
    public let tokenizer: BPETokenizer
    public let contextLength: Int
    public let acceptsTokenPrompts: Bool

    public init(tokenizer: BPETokenizer, contextLength: Int, acceptsTokenPrompts: Bool) {
        self.tokenizer = tokenizer
        self.contextLength = contextLength
        self.acceptsTokenPrompts = acceptsTokenPrompts
    }

    public func job(for request: ChatCompletionRequest) throws(APIError) -> GenerationJob {
        let text = tokenizer.applyChatTemplate(messages: request.messages.map { (role: $0.role, content: $0.content) },
                                               addGenerationPrompt: true)
        return try job(text: text, ids: tokenizer.encode(text, addSpecial: true, parseSpecial: true), fields: request.fields, param: "messages")
    }

    public func job(for request: CompletionRequest) throws(APIError) -> GenerationJob {
        switch request.prompt {
        case .text(let text):
            return try job(text: text, ids: tokenizer.encode(text, addSpecial: true, parseSpecial: true), fields: request.fields, param: "prompt")
        case .tokens(let ids):
            guard acceptsTokenPrompts else {
                throw APIError.invalid("this server runs on a cluster whose coordinator takes prompts as text; send prompt as a string", param: "prompt")
            }
            if let bad = ids.first(where: { $0 < 0 || Int($0) >= tokenizer.vocabularySize }) {
                throw APIError.invalid("token id \(bad) is outside the vocabulary (0..<\(tokenizer.vocabularySize))", param: "prompt")
            }
            return try job(text: nil, ids: ids, fields: request.fields, param: "prompt")
        }
    }

    private func job(text: String?, ids: [Int32], fields: SamplingFields, param: String) throws(APIError) -> GenerationJob {
        guard !ids.isEmpty else { throw APIError.invalid("the prompt is empty after tokenization", param: param) }
        guard ids.count < contextLength else {
            var e = APIError.contextLengthExceeded(promptTokens: ids.count, contextLength: contextLength)
            e.param = param
            throw e
        }
        // Generation stops at the end of the context anyway; the budget never asks for more.
        let room = contextLength - ids.count
        return GenerationJob(promptText: text, promptTokens: ids, maxTokens: min(fields.maxTokens ?? room, room),
                             sampling: fields.samplingOptions(randomSeed: UInt64.random(in: 0...UInt64.max)))
    }
}
