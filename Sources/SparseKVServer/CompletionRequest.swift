/// The body of `POST /v1/completions`. `prompt` is a string, an array of one string, or
/// an array of token ids.
public struct CompletionRequest: Decodable, Sendable, Equatable {
    public enum Prompt: Sendable, Equatable {
        case text(String)
        case tokens([Int32])
    }

    public var prompt: Prompt
    public var fields: SamplingFields

    private enum Key: String, CodingKey { case prompt }

    public init(from decoder: any Decoder) throws {
        try RequestKey.rejectUnknown(in: decoder, allowed: SamplingFields.keys.union(["prompt"]))
        let c = try decoder.container(keyedBy: Key.self)
        if let text = try? c.decode(String.self, forKey: .prompt) {
            prompt = .text(text)
        } else if let texts = try? c.decode([String].self, forKey: .prompt) {
            guard texts.count == 1 else {
                throw APIError.invalid("prompt as an array takes exactly one string (one choice per request), not \(texts.count)", param: "prompt")
            }
            prompt = .text(texts[0])
        } else if let ids = try? c.decode([Int32].self, forKey: .prompt) {
            prompt = .tokens(ids)
        } else {
            throw APIError.invalid("prompt must be a string, an array of one string or an array of token ids", param: "prompt")
        }
        fields = try SamplingFields(from: decoder)
    }

    public static func parse(_ body: [UInt8]) throws(APIError) -> CompletionRequest {
        try RequestDecoding.decode(CompletionRequest.self, from: body)
    }
}
