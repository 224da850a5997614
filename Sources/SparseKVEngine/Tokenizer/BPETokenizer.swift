import Foundation

/// A byte-level BPE tokenizer ("gpt2" tokenizer model) that produces the same token ids
/// as llama.cpp's `llama_tokenize` for the same vocabulary.
///
/// Encoding runs in llama.cpp's order:
/// 1. special tokens are cut out of the raw text, longest spelling first (control tokens
///    only when `parseSpecial` is set, user-defined tokens always);
/// 2. each remaining fragment is cut into words by the vocabulary's `PreTokenizer`;
/// 3. each word's UTF-8 bytes are merged by rank with `BPEMergeTable`;
/// 4. BOS/EOS are added when `addSpecial` is set and the vocabulary asks for them.
///
/// The object is immutable after `init` and safe to share between tasks.
public final class BPETokenizer: Sendable {
    /// A token matched in raw text before pre-tokenization.
    struct SpecialToken: Sendable {
        var id: Int32
        var utf8: [UInt8]
        var attributes: TokenAttributes
    }

    // MARK: - Vocabulary

    /// How text is cut into words before merging.
    public let preTokenizer: PreTokenizer
    /// Beginning-of-sequence token, if the vocabulary has one.
    public let bosID: Int32?
    /// End-of-sequence token (for SmolLM2 this is `<|im_end|>`).
    public let eosID: Int32?
    /// End-of-turn token: the GGUF's `eot_token_id`, else the first of llama.cpp's
    /// end-of-turn spellings present, in its list order (`<|eot_id|>`, `<|im_end|>`, ...):
    /// `<|im_end|>` for ChatML models. (llama.cpp takes whichever spelling its hash map
    /// yields first, `<|endoftext|>` for SmolLM2; both end generation either way.)
    public let eotID: Int32?
    /// The unknown token, if the vocabulary names one (byte-level BPE never needs it).
    public let unknownID: Int32?
    /// The padding token, if the vocabulary names one.
    public let paddingID: Int32?
    /// Every token that ends generation, found as llama.cpp finds them (EOS, EOT, EOM,
    /// and tokens spelled like `<|im_end|>`, `<|endoftext|>`, `<reponame>` ...).
    public let endOfGenerationIDs: Set<Int32>
    /// Whether `encode(_:addSpecial: true)` starts with BOS.
    public let addBOS: Bool
    /// Whether `encode(_:addSpecial: true)` ends with EOS.
    public let addEOS: Bool
    /// The chat format for `--chat` (ChatML, with the model's default system prompt).
    public let chatTemplate: ChatTemplate

    /// Vocabulary spellings, as stored in the GGUF file.  (vocabularySize)
    private let texts: [String]
    private let attributes: [TokenAttributes]
    private let idForText: [String: Int32]
    /// Bytes each token decodes to (special tokens as their spelling), concatenated;
    /// token i owns `pieceBytes[pieceStart[i] ..< pieceStart[i + 1]]`.
    private let pieceBytes: [UInt8]
    private let pieceStart: [Int]  // (vocabularySize + 1)
    private let mergeTable: BPEMergeTable
    /// Control, unknown and user-defined tokens, longest spelling first.
    private let specialTokens: [SpecialToken]

    /// Number of tokens in the vocabulary.
    public var vocabularySize: Int { texts.count }

    // MARK: - Loading

    /// Reads the tokenizer stored in a GGUF file's `tokenizer.*` metadata.
    ///
    /// Special-token ids and `add_bos_token` follow llama.cpp: the "gpt2" model defaults
    /// BOS and EOS to id 11, ids outside the vocabulary are ignored, and a missing
    /// `tokenizer.ggml.pre` means the "default" pre-tokenizer.
    public convenience init(gguf: GGUFFile) throws {
        let source = gguf.path
        let model = try gguf.string("tokenizer.ggml.model")
        guard model == "gpt2" else { throw TokenizerError.unsupportedModel(source: source, model: model) }
        let pre = try PreTokenizer(name: gguf.metadata["tokenizer.ggml.pre"]?.stringValue, source: source)
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        let merges = try gguf.stringArray("tokenizer.ggml.merges")
        let types = gguf.metadata["tokenizer.ggml.token_type"] == nil ? nil : try gguf.intArray("tokenizer.ggml.token_type")

        func id(_ key: String, default fallback: Int32? = nil) -> Int32? {
            if let v = gguf.metadata[key]?.intValue, v >= 0, v < tokens.count { return Int32(v) }
            if let f = fallback, Int(f) < tokens.count { return f }
            return nil
        }
        func flag(_ key: String) -> Bool? { gguf.metadata[key]?.intValue.map { $0 != 0 } }

        try self.init(
            tokens: tokens, merges: merges, tokenTypes: types,
            bosID: id("tokenizer.ggml.bos_token_id", default: 11),
            eosID: id("tokenizer.ggml.eos_token_id", default: 11),
            eotID: id("tokenizer.ggml.eot_token_id"),
            eomID: id("tokenizer.ggml.eom_token_id"),
            unknownID: id("tokenizer.ggml.unknown_token_id"),
            paddingID: id("tokenizer.ggml.padding_token_id"),
            preTokenizer: pre.name,
            addBOS: flag("tokenizer.ggml.add_bos_token"),
            addEOS: flag("tokenizer.ggml.add_eos_token") ?? false,
            chatTemplate: gguf.metadata["tokenizer.chat_template"]?.stringValue,
            source: source)
    }

    /// Builds a tokenizer from plain arrays (tests, or vocabularies from other files).
    ///
    /// - Parameters:
    ///   - tokens: token spellings in GPT-2's byte-to-Unicode form ("Ġthe" for " the").
    ///   - merges: rules "left right", highest priority first.
    ///   - tokenTypes: GGUF token types (1 normal, 3 control, 4 user-defined, ...);
    ///     nil makes every token normal.
    ///   - preTokenizer: a `tokenizer.ggml.pre` name; nil means "default".
    ///   - addBOS: nil takes the pre-tokenizer family's default (true only for Llama 3).
    ///   - chatTemplate: the Jinja chat template, used to find a default system prompt.
    ///   - source: names the vocabulary in errors.
    public init(
        tokens: [String], merges: [String], tokenTypes: [Int]? = nil,
        bosID: Int32? = nil, eosID: Int32? = nil, eotID: Int32? = nil, eomID: Int32? = nil,
        unknownID: Int32? = nil, paddingID: Int32? = nil,
        preTokenizer: String? = "gpt-2", addBOS: Bool? = nil, addEOS: Bool = false,
        chatTemplate: String? = nil, source: String = "<arrays>"
    ) throws {
        let n = tokens.count
        guard n > 0 else { throw TokenizerError.emptyVocabulary(source: source) }
        guard n < Int(Int32.max) / 2 else { throw TokenizerError.vocabularyTooLarge(source: source, count: n) }
        if let t = tokenTypes, t.count != n {
            throw TokenizerError.tokenTypeCountMismatch(source: source, tokens: n, types: t.count)
        }
        for (name, value) in [("bos", bosID), ("eos", eosID), ("eot", eotID), ("eom", eomID),
                               ("unknown", unknownID), ("padding", paddingID)] {
            if let v = value, v < 0 || Int(v) >= n {
                throw TokenizerError.specialTokenOutOfRange(source: source, name: name, id: Int(v), vocabularySize: n)
            }
        }
        let pre = try PreTokenizer(name: preTokenizer, source: source)

        var ids: [String: Int32] = [:]
        ids.reserveCapacity(n)
        for (i, t) in tokens.enumerated() {
            if let first = ids.updateValue(Int32(i), forKey: t) {
                throw TokenizerError.duplicateToken(source: source, text: t, firstID: Int(first), secondID: i)
            }
        }

        // Token attributes: the file's types, then llama.cpp's spelling rules.
        var attrs = tokenTypes.map { $0.map(TokenAttributes.init(ggufTokenType:)) }
            ?? [TokenAttributes](repeating: .normal, count: n)
        for (i, t) in tokens.enumerated() {
            if SpecialTokenRules.controlTexts.contains(t) { attrs[i].insert(.control) }
            if SpecialTokenRules.forcedUserDefinedTexts.contains(t) { attrs[i] = .userDefined }
        }

        func firstPresent(_ spellings: [String]) -> Int32? { spellings.lazy.compactMap { ids[$0] }.first }
        let eot = eotID ?? firstPresent(SpecialTokenRules.endOfTurnTexts)
        let eom = eomID ?? firstPresent(SpecialTokenRules.endOfMessageTexts)
        var eog = Set([eosID, eot, eom].compactMap { $0 })
        for t in SpecialTokenRules.fimEndOfGenerationTexts { if let id = ids[t] { eog.insert(id) } }
        for t in SpecialTokenRules.endOfGenerationTexts { if let id = ids[t] { eog.insert(id) } }

        // What each token decodes to (llama.cpp's token_to_piece with special = true).
        var bytes: [UInt8] = []
        var starts: [Int] = [0]
        bytes.reserveCapacity(n * 6)
        starts.reserveCapacity(n + 1)
        for (i, t) in tokens.enumerated() {
            Self.appendPiece(of: t, attributes: attrs[i], to: &bytes)
            starts.append(bytes.count)
        }

        var specials: [SpecialToken] = []
        for i in 0..<n where attrs[i].isSpecial && !tokens[i].isEmpty {
            specials.append(SpecialToken(id: Int32(i), utf8: Array(tokens[i].utf8), attributes: attrs[i]))
        }
        // Longest first, as llama.cpp; equal lengths by id so the order is reproducible.
        specials.sort { a, b in a.utf8.count != b.utf8.count ? a.utf8.count > b.utf8.count : a.id < b.id }

        self.preTokenizer = pre
        self.bosID = bosID
        self.eosID = eosID
        self.eotID = eot
        self.unknownID = unknownID
        self.paddingID = paddingID
        self.endOfGenerationIDs = eog
        self.addBOS = addBOS ?? pre.addsBOSByDefault
        self.addEOS = addEOS
        self.chatTemplate = ChatTemplate(jinja: chatTemplate)
        self.texts = tokens
        self.attributes = attrs
        self.idForText = ids
        self.pieceBytes = bytes
        self.pieceStart = starts
        self.mergeTable = BPEMergeTable(tokens: tokens, textToID: ids, merges: merges)
        self.specialTokens = specials
    }

    /// Appends the bytes a token stands for: special tokens their spelling, normal tokens
    /// their GPT-2-mapped bytes, `<0xXX>` byte tokens the byte; unused ones nothing.
    private static func appendPiece(of text: String, attributes a: TokenAttributes, to out: inout [UInt8]) {
        if a.isSpecial {
            out.append(contentsOf: text.utf8)
        } else if a.contains(.normal) {
            for u in text.unicodeScalars {
                if let b = ByteUnicode.byte(forScalar: u.value) {
                    out.append(b)
                } else {
                    // Not a GPT-2 byte spelling: keep the scalar as it is rather than
                    // llama.cpp's "[UNK_BYTE_...]" marker.
                    out.append(contentsOf: String(Character(u)).utf8)
                }
            }
        } else if a.contains(.byte) {
            let u = Array(text.utf8)
            if u.count == 6, let b = UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16) { out.append(b) }
        }
    }

    // MARK: - Token queries

    /// The token's spelling in the vocabulary (GPT-2 byte form, e.g. "Ġthe"), or nil
    /// for an id outside the vocabulary.
    public func tokenText(_ id: Int32) -> String? {
        id >= 0 && Int(id) < texts.count ? texts[Int(id)] : nil
    }

    /// The id of a vocabulary spelling, if it is a token.
    public func tokenID(forText text: String) -> Int32? { idForText[text] }

    /// The token's attributes (control, user-defined, ...); empty for an invalid id.
    public func tokenAttributes(_ id: Int32) -> TokenAttributes {
        id >= 0 && Int(id) < attributes.count ? attributes[Int(id)] : []
    }

    /// Whether generation should stop after this token.
    public func isEndOfGeneration(_ id: Int32) -> Bool { endOfGenerationIDs.contains(id) }

    /// The raw bytes a token decodes to. Control and unknown tokens give nothing unless
    /// `renderSpecial` is set; ids outside the vocabulary give nothing.
    public func tokenBytes(_ id: Int32, renderSpecial: Bool = false) -> ArraySlice<UInt8> {
        guard id >= 0, Int(id) < texts.count else { return [] }
        let i = Int(id)
        if !renderSpecial && attributes[i].isHiddenByDefault { return [] }
        return pieceBytes[pieceStart[i]..<pieceStart[i + 1]]
    }

    // MARK: - Decoding

    /// The text of a token sequence. Byte sequences that are not valid UTF-8 (a
    /// character cut between the ids given) become U+FFFD; use `StreamingDecoder` to
    /// decode while generating.
    public func decode(_ ids: [Int32], renderSpecial: Bool = false) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(ids.count * 4)
        for id in ids { out.append(contentsOf: tokenBytes(id, renderSpecial: renderSpecial)) }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: - Chat

    /// Formats a conversation for the model (ChatML; see `ChatTemplate`).
    public func applyChatTemplate(messages: [(role: String, content: String)], addGenerationPrompt: Bool) -> String {
        chatTemplate.apply(messages: messages, addGenerationPrompt: addGenerationPrompt)
    }

    // MARK: - Encoding

    /// Token ids of `text`, identical to llama.cpp's `llama_tokenize(text, addSpecial,
    /// parseSpecial)`.
    ///
    /// - Parameters:
    ///   - addSpecial: add BOS/EOS if the vocabulary asks for them (`addBOS`, `addEOS`).
    ///   - parseSpecial: match control tokens such as `<|im_start|>` in the text; when
    ///     false their spelling is tokenized as ordinary text.
    public func encode(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = false) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3 + 2)
        if addSpecial && addBOS, let bos = bosID { out.append(bos) }
        let bytes = Array(text.utf8)
        var work = EncodeWork()
        for fragment in partition(bytes, parseSpecial: parseSpecial) {
            switch fragment {
            case .token(let id): out.append(id)
            case .text(let range): encodeFragment(bytes, range, &work, &out)
            }
        }
        if addSpecial && addEOS, let eos = eosID { out.append(eos) }
        return out
    }

    /// Per-call state: buffers reused across fragments and words, and a cache of words
    /// already merged (natural text repeats most of its words).
    private struct EncodeWork {
        var scalars: [UInt32] = []
        var classes: [CodepointClass] = []
        /// Byte offset of each scalar, plus the fragment's end.
        var scalarStart: [Int] = []
        var scratch = BPEMergeTable.Scratch()
        var cache: [ArraySlice<UInt8>: [Int32]] = [:]
    }

    private enum Fragment {
        case text(Range<Int>)
        case token(Int32)
    }

    /// llama.cpp's `tokenizer_st_partition`: for each special token, longest first, cut
    /// every remaining text fragment at each occurrence (leftmost, non-overlapping).
    private func partition(_ bytes: [UInt8], parseSpecial: Bool) -> [Fragment] {
        guard !bytes.isEmpty else { return [] }
        var fragments: [Fragment] = [.text(0..<bytes.count)]
        for special in specialTokens {
            if !parseSpecial && special.attributes.isHiddenByDefault { continue }
            var next: [Fragment] = []
            next.reserveCapacity(fragments.count)
            for fragment in fragments {
                guard case .text(let range) = fragment else {
                    next.append(fragment)
                    continue
                }
                var start = range.lowerBound
                while let hit = Self.find(special.utf8, in: bytes, from: start, to: range.upperBound) {
                    if hit > start { next.append(.text(start..<hit)) }
                    next.append(.token(special.id))
                    start = hit + special.utf8.count
                }
                if start < range.upperBound { next.append(.text(start..<range.upperBound)) }
            }
            fragments = next
        }
        return fragments
    }

    /// First position of `needle` (non-empty) in `hay[from..<to]`.
    private static func find(_ needle: [UInt8], in hay: [UInt8], from: Int, to: Int) -> Int? {
        let n = needle.count
        guard n > 0, to - from >= n else { return nil }
        let first = needle[0]
        var i = from
        let last = to - n
        while i <= last {
            if hay[i] == first {
                var j = 1
                while j < n && hay[i + j] == needle[j] { j += 1 }
                if j == n { return i }
            }
            i += 1
        }
        return nil
    }

    /// Pre-tokenizes one text fragment and merges each word.
    private func encodeFragment(_ bytes: [UInt8], _ range: Range<Int>, _ w: inout EncodeWork, _ out: inout [Int32]) {
        w.scalars.removeAll(keepingCapacity: true)
        w.classes.removeAll(keepingCapacity: true)
        w.scalarStart.removeAll(keepingCapacity: true)
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            let (value, length) = Self.decodeScalar(bytes, i, end)
            w.scalarStart.append(i)
            w.scalars.append(value)
            w.classes.append(CodepointClass.of(value))
            i += length
        }
        w.scalarStart.append(end)

        for word in preTokenizer.split(scalars: w.scalars, classes: w.classes) {
            let slice = bytes[w.scalarStart[word.lowerBound]..<w.scalarStart[word.upperBound]]
            if let cached = w.cache[slice] {
                out.append(contentsOf: cached)
                continue
            }
            let before = out.count
            if preTokenizer.ignoresMerges, let id = idForText[ByteUnicode.encode(slice)] {
                out.append(id)
            } else {
                mergeTable.encodeWord(slice, scratch: &w.scratch, into: &out)
            }
            w.cache[slice] = Array(out[before...])
        }
    }

    /// Decodes the scalar at `i` of valid UTF-8 (the bytes of a Swift String). Should a
    /// sequence be cut short anyway, the lone byte reads as U+FFFD, as in llama.cpp.
    @inline(__always)
    private static func decodeScalar(_ b: [UInt8], _ i: Int, _ end: Int) -> (UInt32, Int) {
        let b0 = UInt32(b[i])
        if b0 < 0x80 { return (b0, 1) }
        let length = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 1
        guard length > 1, i + length <= end else { return (0xFFFD, 1) }
        var v = b0 & (0x7F >> UInt32(length))
        for k in 1..<length { v = v << 6 | (UInt32(b[i + k]) & 0x3F) }
        return (v, length)
    }
}
