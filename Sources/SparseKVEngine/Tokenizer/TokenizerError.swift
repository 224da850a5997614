import Foundation

/// Why a tokenizer could not be built from a vocabulary. Every case says which
/// vocabulary (`source`: the GGUF path, or "<arrays>" for the in-memory initializer)
/// and what to do about it.
public enum TokenizerError: LocalizedError, Sendable, Equatable {
    /// `tokenizer.ggml.model` names a tokenizer family other than byte-level BPE.
    case unsupportedModel(source: String, model: String)
    /// `tokenizer.ggml.pre` names a pre-tokenizer this engine does not implement.
    case unknownPreTokenizer(source: String, name: String, supported: [String])
    /// The vocabulary has no tokens.
    case emptyVocabulary(source: String)
    /// The vocabulary is larger than token ids (Int32) can address.
    case vocabularyTooLarge(source: String, count: Int)
    /// The same token text appears twice, so text -> id would be ambiguous.
    case duplicateToken(source: String, text: String, firstID: Int, secondID: Int)
    /// `tokenizer.ggml.token_type` does not have one entry per token.
    case tokenTypeCountMismatch(source: String, tokens: Int, types: Int)
    /// A special-token id (bos, eos, ...) points outside the vocabulary.
    case specialTokenOutOfRange(source: String, name: String, id: Int, vocabularySize: Int)

    public var errorDescription: String? {
        switch self {
        case .unsupportedModel(let s, let m):
            return "\(s): tokenizer model '\(m)' is not supported; SparseKV implements byte-level BPE "
                + "(tokenizer.ggml.model = \"gpt2\"). Use a GGUF converted from a GPT-2-style tokenizer."
        case .unknownPreTokenizer(let s, let n, let supported):
            return "\(s): pre-tokenizer '\(n)' (tokenizer.ggml.pre) is not implemented. "
                + "Supported: \(supported.joined(separator: ", "))."
        case .emptyVocabulary(let s):
            return "\(s): the tokenizer vocabulary (tokenizer.ggml.tokens) is empty."
        case .vocabularyTooLarge(let s, let n):
            return "\(s): the vocabulary has \(n) tokens, more than 32-bit token ids can address."
        case .duplicateToken(let s, let t, let a, let b):
            return "\(s): token text \(t.debugDescription) appears twice (ids \(a) and \(b)); the vocabulary is corrupt."
        case .tokenTypeCountMismatch(let s, let n, let m):
            return "\(s): tokenizer.ggml.token_type has \(m) entries for \(n) tokens; the file is corrupt."
        case .specialTokenOutOfRange(let s, let name, let id, let n):
            return "\(s): special token \(name) = \(id) is outside the vocabulary (size \(n))."
        }
    }
}
