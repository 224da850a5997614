import Foundation

/// The body of `POST /v1/chat/completions`.
public struct ChatCompletionRequest: Decodable, Sendable, Equatable {
    public var messages: [ChatMessage]
    public var fields: SamplingFields

    private enum Key: String, CodingKey { case messages }

    public init(from decoder: any Decoder) throws {
        try RequestKey.rejectUnknown(in: decoder, allowed: SamplingFields.keys.union(["messages"]))
        messages = try decoder.container(keyedBy: Key.self).decode([ChatMessage].self, forKey: .messages)
        guard !messages.isEmpty else { throw APIError.invalid("messages must hold at least one message", param: "messages") }
        fields = try SamplingFields(from: decoder)
    }

    /// Parses a request body; every failure is an ``APIError`` with status 400.
    public static func parse(_ body: [UInt8]) throws(APIError) -> ChatCompletionRequest {
        try RequestDecoding.decode(ChatCompletionRequest.self, from: body)
    }
}
