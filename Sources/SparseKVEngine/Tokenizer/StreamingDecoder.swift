/// Turns generated token ids into text as they arrive, without ever showing half a
/// character.
///
/// Byte-level BPE tokens need not end on a character boundary: an emoji's four bytes
/// can arrive in two or three tokens. `feed` returns only complete UTF-8 text and keeps
/// an unfinished trailing sequence until the bytes that complete it arrive; bytes that
/// can never form a character come out as U+FFFD right away. `flush` returns whatever
/// is still held at the end of generation.
public struct StreamingDecoder: Sendable {
    /// The vocabulary the ids belong to.
    public let tokenizer: BPETokenizer
    /// Whether control tokens (`<|im_end|>` ...) appear in the text.
    public var renderSpecial: Bool
    /// Bytes of an unfinished character, at most 3.
    private var pending: [UInt8] = []

    /// A decoder with nothing held back yet.
    public init(tokenizer: BPETokenizer, renderSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
    }

    /// Whether bytes of an unfinished character are being held back.
    public var hasPendingBytes: Bool { !pending.isEmpty }

    /// Adds one token; returns the text that is now complete (often empty).
    public mutating func feed(_ id: Int32) -> String {
        pending.append(contentsOf: tokenizer.tokenBytes(id, renderSpecial: renderSpecial))
        let keep = Self.incompleteTailLength(pending)
        guard pending.count > keep else { return "" }
        let text = String(decoding: pending[..<(pending.count - keep)], as: UTF8.self)
        pending.removeFirst(pending.count - keep)
        return text
    }

    /// Adds several tokens; returns the text that is now complete.
    public mutating func feed<S: Sequence>(_ ids: S) -> String where S.Element == Int32 {
        var out = ""
        for id in ids { out += feed(id) }
        return out
    }

    /// Ends the stream: returns held bytes (an unfinished character becomes U+FFFD).
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    // MARK: - UTF-8

    /// Length of the trailing bytes that are a proper prefix of a valid UTF-8 sequence
    /// (so more bytes could complete it); 0 when the buffer ends on a boundary or the
    /// tail can never become valid.
    static func incompleteTailLength(_ b: [UInt8]) -> Int {
        let n = b.count
        // A sequence is at most 4 bytes, so an unfinished one starts in the last 3.
        var start = n - 1
        while start >= 0 && start >= n - 3 && b[start] & 0xC0 == 0x80 { start -= 1 }
        guard start >= 0, start >= n - 3 else { return 0 }
        let lead = b[start]
        let need: Int
        switch lead {
        case 0xC2...0xDF: need = 2
        case 0xE0...0xEF: need = 3
        case 0xF0...0xF4: need = 4
        default: return 0  // ASCII or a byte that never starts a sequence
        }
        let have = n - start
        guard have < need else { return 0 }
        // The second byte has a narrower range after some leads (no overlongs, no
        // surrogates, nothing above U+10FFFF); a tail that breaks it is not held.
        if have >= 2 {
            let second = b[start + 1]
            let ok: Bool
            switch lead {
            case 0xE0: ok = (0xA0...0xBF).contains(second)
            case 0xED: ok = (0x80...0x9F).contains(second)
            case 0xF0: ok = (0x90...0xBF).contains(second)
            case 0xF4: ok = (0x80...0x8F).contains(second)
            default: ok = true
            }
            if !ok { return 0 }
        }
        return have
    }
}
