import ArgumentParser
import SparseKVEngine

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize", abstract: "Print the token ids of a text (as llama.cpp would produce them).")

    @OptionGroup var common: ModelOptions

    @Option(name: .shortAndLong, help: "Text to tokenize.")
    var prompt: String

    @Flag(help: "Recognise special tokens such as <|im_start|> in the text.")
    var special = false

    @Flag(help: "Print each id with its token text.")
    var pieces = false

    func run() throws {
        let (gguf, _) = try common.setUp()
        let tokenizer = try BPETokenizer(gguf: gguf)
        let ids = tokenizer.encode(prompt, addSpecial: true, parseSpecial: special)
        if pieces {
            for id in ids { print("\(id)\t\(tokenizer.decode([id]).debugDescription)") }
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}
