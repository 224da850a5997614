/// The ChatML conversation format used by `--chat`:
///
///     <|im_start|>system\nYou are ...<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n
///
/// SmolLM2's Jinja template (`tokenizer.chat_template`) inserts a default system turn
/// ("You are a helpful AI assistant named SmolLM, trained by Hugging Face") when the
/// conversation does not start with one. Rather than run Jinja, this type reads that
/// default prompt out of the template and reproduces the template's output; the result
/// is meant to be encoded with `parseSpecial: true`.
public struct ChatTemplate: Sendable, Equatable {
    /// The system prompt inserted before a conversation whose first message is not a
    /// system message, or nil for none.
    public var defaultSystemPrompt: String?
    /// The Jinja template this was read from, if any.
    public let jinja: String?

    /// Whether the model's own template is ChatML; if false, `apply` still writes
    /// ChatML, which the model may not have been trained on.
    public var modelUsesChatML: Bool { jinja?.contains("<|im_start|>") ?? false }

    /// Reads the default system prompt (if any) out of a Jinja chat template.
    public init(jinja: String?) {
        self.jinja = jinja
        self.defaultSystemPrompt = jinja.flatMap(Self.defaultSystemPrompt(in:))
    }

    /// A ChatML template with an explicit default system prompt.
    public init(defaultSystemPrompt: String?) {
        self.jinja = nil
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    /// The prompt text for a conversation, as SmolLM2's template renders it: every
    /// message as `<|im_start|>role\ncontent<|im_end|>\n`, the default system turn first
    /// if the first message is not a system message, and `<|im_start|>assistant\n` at
    /// the end when `addGenerationPrompt` is set. Contents are not trimmed.
    public func apply(messages: [(role: String, content: String)], addGenerationPrompt: Bool) -> String {
        var out = ""
        if let first = messages.first, first.role != "system", let system = defaultSystemPrompt {
            out += "<|im_start|>system\n\(system)<|im_end|>\n"
        }
        for m in messages {
            out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n"
        }
        if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        return out
    }

    // MARK: - Reading the template

    /// Finds a literal system turn, `<|im_start|>system` + newline + text + `<|im_end|>`,
    /// inside a string literal of the template. Only literal text qualifies: a turn
    /// built from Jinja expressions (`{{ ... }}`) is not a default prompt.
    static func defaultSystemPrompt(in jinja: String) -> String? {
        let opener = "<|im_start|>system"
        guard let open = jinja.range(of: opener) else { return nil }
        var rest = jinja[open.upperBound...]
        // The newline is either a real one or the two-character escape "\n".
        if rest.hasPrefix("\n") {
            rest = rest.dropFirst()
        } else if rest.hasPrefix("\\n") {
            rest = rest.dropFirst(2)
        } else {
            return nil
        }
        guard let close = rest.range(of: "<|im_end|>") else { return nil }
        let raw = rest[..<close.lowerBound]
        guard !raw.isEmpty, !raw.contains("{{"), !raw.contains("{%"), !raw.contains("' +"), !raw.contains("+ '")
        else { return nil }
        return unescapeJinjaString(raw)
    }

    /// Undoes the escapes a Jinja (Python-style) string literal may contain.
    private static func unescapeJinjaString(_ s: Substring) -> String {
        var out = ""
        var escaping = false
        for ch in s {
            if escaping {
                switch ch {
                case "n": out.append("\n")
                case "t": out.append("\t")
                default: out.append(ch)  // \' \" \\
                }
                escaping = false
            } else if ch == "\\" {
                escaping = true
            } else {
                out.append(ch)
            }
        }
        if escaping { out.append("\\") }
        return out
    }
}
