/// One message of a chat completion request. `content` is a string, or an array of
/// content parts of which only `{"type": "text", "text": ...}` is taken.
public struct ChatMessage: Decodable, Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    private enum Key: String, CodingKey { case role, content, name }

    private struct Part: Decodable {
        var type: String
        var text: String?
    }

    static let roles: Set<String> = ["system", "developer", "user", "assistant"]

    public init(from decoder: any Decoder) throws {
        try RequestKey.rejectUnknown(in: decoder, allowed: ["role", "content", "name"])
        let c = try decoder.container(keyedBy: Key.self)
        role = try c.decode(String.self, forKey: .role)
        guard Self.roles.contains(role) else {
            throw APIError.invalid("message role '\(role)' is not one of \(Self.roles.sorted().joined(separator: ", "))", param: "messages")
        }
        if role == "developer" { role = "system" }
        if let text = try? c.decodeIfPresent(String.self, forKey: .content) {
            content = text
        } else if let parts = try c.decodeIfPresent([Part].self, forKey: .content) {
            guard parts.allSatisfy({ $0.type == "text" && $0.text != nil }) else {
                throw APIError.invalid("only text content parts are supported", param: "messages")
            }
            content = parts.compactMap(\.text).joined()
        } else {
            content = ""
        }
    }
}
