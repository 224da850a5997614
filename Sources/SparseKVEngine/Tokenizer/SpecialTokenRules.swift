/// The token-text rules llama.cpp applies on top of the GGUF's special-token ids
/// (src/llama-vocab.cpp, "auto-detect special tokens by text"). GGUF files do not say
/// which tokens end a turn, so llama.cpp recognises them by spelling; following the
/// same lists keeps end-of-generation and special-token parsing identical to it.
enum SpecialTokenRules {
    /// End-of-turn candidates, in priority order; the first one present is the EOT token
    /// when the GGUF has no `tokenizer.ggml.eot_token_id`.
    static let endOfTurnTexts = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
        "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
    ]

    static let endOfMessageTexts = ["<|eom_id|>"]

    /// Fill-in-the-middle markers: llama.cpp makes all of them control tokens, and the
    /// pad/repo/separator ones also end generation.
    static let fimTexts = [
        "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>",
        "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
        "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
        "▁<MID>", "<|code_middle|>", "<|middle|>",
    ] + fimEndOfGenerationTexts

    static let fimEndOfGenerationTexts = [
        "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
        "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
        "<|file_sep|>",
    ]

    /// Tokens that end generation by their spelling alone.
    static let endOfGenerationTexts: Set<String> = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<｜end▁of▁sentence｜>", "[e~[",
    ]

    /// Every spelling that llama.cpp turns into a control token even if the file says
    /// it is a normal one.
    static let controlTexts: Set<String> =
        Set(endOfTurnTexts).union(endOfMessageTexts).union(fimTexts).union(endOfGenerationTexts)

    /// gpt-oss markers that llama.cpp always renders, whatever the file says.
    static let forcedUserDefinedTexts: Set<String> = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]
}
