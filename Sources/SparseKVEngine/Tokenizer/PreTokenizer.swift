/// Cuts text into the words that BPE merges within, exactly as llama.cpp does for the
/// same `tokenizer.ggml.pre` name (src/llama-vocab.cpp, src/unicode.cpp).
///
/// llama.cpp describes each pre-tokenizer as a list of regexes applied one after the
/// other: every regex re-splits each piece the previous one produced, and what it does
/// not match stays a piece of its own. The main GPT-2-style regexes run in hand-written
/// splitters that treat the end of a piece like the end of the text. This type does the
/// same passes by hand over Unicode scalars: no regex engine, one array walk per pass.
public struct PreTokenizer: Sendable, Equatable {
    /// The families of regex lists this engine implements.
    public enum Kind: String, Sendable, Equatable {
        /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
        case gpt2
        /// `\p{N}` (every digit alone), then the GPT-2 regex. SmolLM, StarCoder.
        case smollm
        /// llama.cpp's fallback: punctuation runs, GPT-2, `\p{N}+`, `[0-9][0-9][0-9]`.
        case `default`
        /// Llama 3: case-insensitive contractions, `[^\r\n\p{L}\p{N}]?\p{L}+`,
        /// `\p{N}{1,3}`, ` ?[^\s\p{L}\p{N}]+[\r\n]*`, `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`.
        case llama3
        /// Qwen 2: the Llama 3 regex with single digits, `\p{N}`.
        case qwen2
    }

    /// The name the vocabulary gave (`tokenizer.ggml.pre`), or "default".
    public let name: String
    /// The regex list `name` stands for.
    public let kind: Kind
    /// llama.cpp's `ignore_merges`: a word that is itself a token is not merged.
    public let ignoresMerges: Bool
    /// Whether llama.cpp adds BOS for this family when the GGUF does not say.
    public let addsBOSByDefault: Bool

    /// `tokenizer.ggml.pre` names this engine understands, by family: llama.cpp's names
    /// for these regex lists, plus "gpt2" as an alias of "gpt-2" (llama.cpp itself
    /// rejects "gpt2"). Names whose llama.cpp handling needs more than the regexes
    /// (extra separator tokens, whitespace escaping, ...) are left out on purpose.
    public static let namesByKind: [(Kind, [String])] = [
        (.smollm, ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"]),
        (.gpt2, ["gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "exaone4", "mellum", "gigachat", "a.x-4.0",
                 "trillion", "granite-docling"]),
        (.default, ["default"]),
        (.llama3, ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                   "dbrx", "smaug-bpe"]),
        (.qwen2, ["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"]),
    ]

    /// All accepted names, for error messages.
    public static var supportedNames: [String] { namesByKind.flatMap(\.1) }

    /// Looks a pre-tokenizer up by its GGUF name; nil (key absent) means "default",
    /// as in llama.cpp. `source` only labels the error.
    public init(name: String?, source: String = "<arrays>") throws {
        let n = name ?? "default"
        guard let kind = Self.namesByKind.first(where: { $0.1.contains(n) })?.0 else {
            throw TokenizerError.unknownPreTokenizer(source: source, name: n, supported: Self.supportedNames)
        }
        self.name = n
        self.kind = kind
        // llama.cpp sets these two flags for the Llama 3 names only, not for dbrx/smaug.
        let llama3Proper = kind == .llama3 && n != "dbrx" && n != "smaug-bpe"
        ignoresMerges = llama3Proper
        addsBOSByDefault = llama3Proper
    }

    // MARK: - Splitting

    /// Splits one fragment of text (special tokens already taken out) into words.
    ///
    /// - Parameters:
    ///   - scalars: the fragment's scalar values.  (n)
    ///   - classes: `CodepointClass.of` each scalar.  (n)
    /// - Returns: consecutive, non-empty index ranges covering `0..<n`.
    func split(scalars: [UInt32], classes: [CodepointClass]) -> [Range<Int>] {
        let all = [0..<scalars.count]
        switch kind {
        case .gpt2:
            return Self.splitGPT2(scalars, classes, all)
        case .smollm:
            let digits = Self.isolate(all, maxRun: 1) { classes[$0].contains(.number) }
            return Self.splitGPT2(scalars, classes, digits)
        case .default:
            let punct = Self.isolate(all, maxRun: Int.max) { i in
                classes[i].contains(.punctuation) || Self.defaultExtraPunctuation(scalars[i])
            }
            let words = Self.splitGPT2(scalars, classes, punct)
            let numbers = Self.isolate(words, maxRun: Int.max) { classes[$0].contains(.number) }
            return Self.isolateDigitTriples(scalars, numbers)
        case .llama3:
            return Self.splitLlama3(scalars, classes, all, maxDigits: 3)
        case .qwen2:
            return Self.splitLlama3(scalars, classes, all, maxDigits: 1)
        }
    }

    // MARK: - Simple passes (the regexes llama.cpp runs through std::regex)

    /// `$ + < = > ^ ~ |`: the symbols the default pre-tokenizer groups with \p{P}.
    @inline(__always)
    private static func defaultExtraPunctuation(_ c: UInt32) -> Bool {
        c == 0x24 || c == 0x2B || c == 0x3C || c == 0x3D || c == 0x3E || c == 0x5E || c == 0x7E || c == 0x7C
    }

    /// A "class+" or "class" regex: each run of matching scalars (cut every `maxRun`)
    /// becomes a piece, and so does each gap between runs.
    private static func isolate(_ chunks: [Range<Int>], maxRun: Int, _ matches: (Int) -> Bool) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(chunks.count)
        for chunk in chunks {
            var gapStart = chunk.lowerBound
            var pos = chunk.lowerBound
            while pos < chunk.upperBound {
                guard matches(pos) else { pos += 1; continue }
                if pos > gapStart { out.append(gapStart..<pos) }
                let runStart = pos
                while pos < chunk.upperBound, pos - runStart < maxRun, matches(pos) { pos += 1 }
                out.append(runStart..<pos)
                gapStart = pos
            }
            if chunk.upperBound > gapStart { out.append(gapStart..<chunk.upperBound) }
        }
        return out
    }

    /// `[0-9][0-9][0-9]`: ASCII digit triples, leftmost first; the rest stays as gaps.
    private static func isolateDigitTriples(_ cps: [UInt32], _ chunks: [Range<Int>]) -> [Range<Int>] {
        @inline(__always) func digit(_ c: UInt32) -> Bool { c >= 0x30 && c <= 0x39 }
        var out: [Range<Int>] = []
        out.reserveCapacity(chunks.count)
        for chunk in chunks {
            var gapStart = chunk.lowerBound
            var pos = chunk.lowerBound
            while pos < chunk.upperBound {
                if pos + 3 <= chunk.upperBound, digit(cps[pos]), digit(cps[pos + 1]), digit(cps[pos + 2]) {
                    if pos > gapStart { out.append(gapStart..<pos) }
                    out.append(pos..<(pos + 3))
                    pos += 3
                    gapStart = pos
                } else {
                    pos += 1
                }
            }
            if chunk.upperBound > gapStart { out.append(gapStart..<chunk.upperBound) }
        }
        return out
    }

    // MARK: - GPT-2 splitter

    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` over
    /// each chunk, with llama.cpp's reading of it: a whitespace run that reaches the end
    /// of the chunk is kept whole, otherwise its last scalar is left to start the next word.
    private static func splitGPT2(_ cps: [UInt32], _ cls: [CodepointClass], _ chunks: [Range<Int>]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(cps.count / 3 + chunks.count)
        for chunk in chunks {
            let end = chunk.upperBound
            // Past the chunk nothing has a class, as if the text ended there.
            @inline(__always) func classAt(_ i: Int) -> CodepointClass { i < end ? cls[i] : [] }
            @inline(__always) func isOther(_ k: CodepointClass) -> Bool {
                k.contains(.present) && k.isDisjoint(with: [.whitespace, .letter, .number])
            }
            var pos = chunk.lowerBound
            var wordStart = pos
            @inline(__always) func cut(_ i: Int) {
                if i > wordStart { out.append(wordStart..<i) }
                wordStart = i
            }
            while pos < end {
                let c = cps[pos]
                if c == 0x27, pos + 1 < end, let n = contractionLength(cps, pos, end, caseInsensitive: false) {
                    pos += n
                    cut(pos)
                    continue
                }
                // ` ?X+`: an optional leading space, judged by the scalar after it.
                let lead = c == 0x20 ? 1 : 0
                let k = lead == 1 ? classAt(pos + 1) : cls[pos]
                if k.contains(.letter) || k.contains(.number) {
                    let want: CodepointClass = k.contains(.letter) ? .letter : .number
                    pos += lead
                    while classAt(pos).contains(want) { pos += 1 }
                    cut(pos)
                    continue
                }
                if isOther(k) {
                    pos += lead
                    while isOther(classAt(pos)) { pos += 1 }
                    cut(pos)
                    continue
                }
                var n = 0
                while classAt(pos + n).contains(.whitespace) { n += 1 }
                if n > 1 && pos + n < end {
                    pos += n - 1  // `\s+(?!\S)`: leave one space for the next word
                } else if n > 0 {
                    pos += n
                } else {
                    pos += 1
                }
                cut(pos)
            }
        }
        return out
    }

    /// Length of `'s 't 'm 'd` (2) or `'re 've 'll` (3) at `pos` (an apostrophe), if any.
    @inline(__always)
    private static func contractionLength(_ cps: [UInt32], _ pos: Int, _ end: Int, caseInsensitive: Bool) -> Int? {
        @inline(__always) func lower(_ c: UInt32) -> UInt32 {
            caseInsensitive && c >= 0x41 && c <= 0x5A ? c + 0x20 : c
        }
        let a = lower(cps[pos + 1])
        if a == 0x73 || a == 0x74 || a == 0x6D || a == 0x64 { return 2 }  // s t m d
        guard pos + 2 < end else { return nil }
        let b = lower(cps[pos + 2])
        if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) { return 3 }  // re ve ll
        return nil
    }

    // MARK: - Llama 3 / Qwen 2 splitter

    /// The Llama 3 regex (see `Kind.llama3`); `maxDigits` is 3 for Llama 3, 1 for Qwen 2.
    private static func splitLlama3(
        _ cps: [UInt32], _ cls: [CodepointClass], _ chunks: [Range<Int>], maxDigits: Int
    ) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(cps.count / 3 + chunks.count)
        for chunk in chunks {
            let end = chunk.upperBound
            @inline(__always) func classAt(_ i: Int) -> CodepointClass { i < end ? cls[i] : [] }
            @inline(__always) func isNewline(_ i: Int) -> Bool { i < end && (cps[i] == 0x0A || cps[i] == 0x0D) }
            var pos = chunk.lowerBound
            var wordStart = pos
            @inline(__always) func cut(_ i: Int) {
                if i > wordStart { out.append(wordStart..<i) }
                wordStart = i
            }
            while pos < end {
                let c = cps[pos]
                let k = cls[pos]
                if c == 0x27, pos + 1 < end, let n = contractionLength(cps, pos, end, caseInsensitive: true) {
                    pos += n
                    cut(pos)
                    continue
                }
                // `[^\r\n\p{L}\p{N}]?\p{L}+`
                if !isNewline(pos) && !k.contains(.number) && (k.contains(.letter) || classAt(pos + 1).contains(.letter)) {
                    pos += 1
                    while classAt(pos).contains(.letter) { pos += 1 }
                    cut(pos)
                    continue
                }
                // `\p{N}{1,maxDigits}`, repeated over a long run
                if k.contains(.number) {
                    var runStart = pos
                    while classAt(pos).contains(.number) {
                        pos += 1
                        if pos - runStart >= maxDigits {
                            cut(pos)
                            runStart = pos
                        }
                    }
                    cut(pos)
                    continue
                }
                // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (llama.cpp tests the current scalar's
                // presence, not the one after the space; the outcome is the same)
                let k2 = c == 0x20 ? classAt(pos + 1) : k
                if k2.isDisjoint(with: [.whitespace, .letter, .number]) && k.contains(.present) {
                    pos += c == 0x20 ? 1 : 0
                    while true {
                        let kk = classAt(pos)
                        guard kk.contains(.present), kk.isDisjoint(with: [.whitespace, .letter, .number]) else { break }
                        pos += 1
                    }
                    while isNewline(pos) { pos += 1 }
                    cut(pos)
                    continue
                }
                var n = 0
                var afterLastNewline: Int?
                while classAt(pos + n).contains(.whitespace) {
                    if isNewline(pos + n) { afterLastNewline = pos + n + 1 }
                    n += 1
                }
                if let stop = afterLastNewline {
                    pos = stop  // `\s*[\r\n]+`
                } else if n > 1 && pos + n < end {
                    pos += n - 1  // `\s+(?!\S)`
                } else if n > 0 {
                    pos += n  // `\s+`
                } else {
                    pos += 1
                }
                cut(pos)
            }
        }
        return out
    }
}
