/// What kind of entry a vocabulary token is (llama.cpp's `llama_token_attr`), derived
/// from `tokenizer.ggml.token_type` and a few rules on token texts.
public struct TokenAttributes: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Type 0, or a type number this engine does not know. Decodes to nothing.
    public static let undefined = TokenAttributes(rawValue: 1 << 0)
    /// Type 1: an ordinary byte-level BPE token.
    public static let normal = TokenAttributes(rawValue: 1 << 1)
    /// Type 2: the unknown token. Treated like a control token.
    public static let unknown = TokenAttributes(rawValue: 1 << 2)
    /// Type 3: a control token (`<|im_start|>`, `<|endoftext|>`): matched in raw text
    /// only when special tokens are parsed, and not shown when decoding by default.
    public static let control = TokenAttributes(rawValue: 1 << 3)
    /// Type 4: a user-defined token: always matched in raw text, always shown as is.
    public static let userDefined = TokenAttributes(rawValue: 1 << 4)
    /// Type 5: an unused slot. Decodes to nothing.
    public static let unused = TokenAttributes(rawValue: 1 << 5)
    /// Type 6: a byte-fallback token spelled `<0xXX>`.
    public static let byte = TokenAttributes(rawValue: 1 << 6)

    /// The attributes of a GGUF token type number.
    public init(ggufTokenType type: Int) {
        switch type {
        case 1: self = .normal
        case 2: self = .unknown
        case 3: self = .control
        case 4: self = .userDefined
        case 5: self = .unused
        case 6: self = .byte
        default: self = .undefined
        }
    }

    /// Tokens that are cut out of raw text before pre-tokenization.
    var isSpecial: Bool { !isDisjoint(with: [.control, .userDefined, .unknown]) }
    /// Tokens that are hidden unless special tokens are rendered.
    var isHiddenByDefault: Bool { !isDisjoint(with: [.control, .unknown]) }
}
