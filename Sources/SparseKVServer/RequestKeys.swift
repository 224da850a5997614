/// A coding key for any JSON object key, used to find fields a request type does not know.
struct RequestKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }

    /// Throws ``APIError/unknownField(_:)`` for the first key of the decoder's object that
    /// is not in `allowed` (in sorted order, so the answer does not depend on hashing).
    static func rejectUnknown(in decoder: any Decoder, allowed: Set<String>) throws {
        let container = try decoder.container(keyedBy: RequestKey.self)
        if let unknown = container.allKeys.map(\.stringValue).filter({ !allowed.contains($0) }).sorted().first {
            throw APIError.unknownField(unknown)
        }
    }
}
