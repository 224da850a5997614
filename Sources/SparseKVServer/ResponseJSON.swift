import Foundation

/// JSON encoding of replies: compact, sorted keys, snake_case as OpenAI writes it (the
/// reply types spell their keys out).
enum ResponseJSON {
    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return [UInt8](try e.encode(value))
    }
}
