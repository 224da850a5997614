@testable import SparseKVEngine

/// A real byte-level BPE tokenizer with no merges: ids 0...255 are the bytes, then
/// ChatML's control tokens and an end-of-text token.
enum ByteTokenizer {
    static let imStart: Int32 = 256, imEnd: Int32 = 257, endOfText: Int32 = 258

    static func make() throws -> BPETokenizer {
        var tokens = (0..<256).map { ByteUnicode.encode([UInt8($0)]) }
        var types = [Int](repeating: 1, count: 256)
        for special in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"] {
            tokens.append(special)
            types.append(3)
        }
        return try BPETokenizer(tokens: tokens, merges: [], tokenTypes: types, bosID: nil, eosID: endOfText, eotID: imEnd,
                                addBOS: false)
    }

    /// The ids of `text`'s bytes.
    static func ids(_ text: String) -> [Int32] { text.utf8.map { Int32($0) } }
}
