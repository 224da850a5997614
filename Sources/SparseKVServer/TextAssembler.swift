import SparseKVEngine

/// Turns sampled token ids into the text a client sees, piece by piece, and finds the
/// request's stop sequences in it.
///
/// Text that could be the start of a stop sequence is held back until the next tokens
/// show whether it is; text from a stop sequence on is never sent (OpenAI's behaviour).
/// Half characters are held by ``StreamingDecoder``.
public struct TextAssembler: Sendable {
    private var decoder: StreamingDecoder
    public let stops: [String]
    /// Decoded text not yet handed out (a possible stop-sequence prefix).
    private var pending = ""
    /// Whether a stop sequence was found; nothing more comes out after it.
    public private(set) var stopped = false
    /// All text handed out so far.
    public private(set) var text = ""

    public init(tokenizer: BPETokenizer, stops: [String]) {
        decoder = StreamingDecoder(tokenizer: tokenizer)
        self.stops = stops
    }

    /// Adds one token; returns the text that is now final (often empty, or everything
    /// before a stop sequence once it appears).
    public mutating func feed(_ id: Int32) -> String {
        guard !stopped else { return "" }
        return release(decoder.feed(id), final: false)
    }

    /// The end of generation: everything still held that is not a stop sequence.
    public mutating func finish() -> String {
        guard !stopped else { return "" }
        return release(decoder.flush(), final: true)
    }

    private mutating func release(_ piece: String, final: Bool) -> String {
        pending += piece
        if let cut = stops.compactMap({ pending.range(of: $0)?.lowerBound }).min() {
            stopped = true
            let out = String(pending[..<cut])
            pending = ""
            text += out
            return out
        }
        let hold = final ? 0 : Self.heldSuffixLength(pending, stops: stops)
        let out = String(pending.dropLast(hold))
        pending = String(pending.suffix(hold))
        text += out
        return out
    }

    /// Length (in characters) of the longest suffix of `s` that is a proper prefix of a
    /// stop sequence.
    static func heldSuffixLength(_ s: String, stops: [String]) -> Int {
        var best = 0
        for stop in stops {
            var n = min(stop.count - 1, s.count)
            while n > best {
                if stop.hasPrefix(s.suffix(n)) { best = n; break }
                n -= 1
            }
        }
        return best
    }
}
