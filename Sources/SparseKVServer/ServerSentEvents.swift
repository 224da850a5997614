import Foundation

/// Server-sent events framing as OpenAI streams it: each event is `data: <json>` and a
/// blank line; the stream ends with `data: [DONE]`.
public enum ServerSentEvents {
    /// One event carrying `json` (which must not contain a newline; JSONEncoder output
    /// does not).
    public static func event(_ json: [UInt8]) -> [UInt8] {
        Array("data: ".utf8) + json + Array("\n\n".utf8)
    }

    /// One event carrying an encodable value as compact JSON.
    public static func event<T: Encodable>(_ value: T) throws -> [UInt8] {
        event(try ResponseJSON.encode(value))
    }

    /// The end of the stream.
    public static let done = Array("data: [DONE]\n\n".utf8)

    /// Splits an SSE byte stream into the `data:` payloads of its events (for tests and
    /// clients; comments and other fields are skipped).
    public static func dataPayloads(_ text: String) -> [String] {
        text.components(separatedBy: "\n\n").compactMap { block in
            let lines = block.split(separator: "\n").filter { $0.hasPrefix("data:") }
            guard !lines.isEmpty else { return nil }
            return lines.map { String($0.dropFirst(5).drop { $0 == " " }) }.joined(separator: "\n")
        }
    }
}
