import ArgumentParser
import Foundation
import SparseKVEngine

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize", abstract: "Print the token ids of a text (as llama.cpp would produce them).")

    @OptionGroup var common: ModelOptions

    @Option(name: .shortAndLong, help: "Text to tokenize.")
    var prompt: String?

    @Option(help: "Read the text from this file ('-' for stdin). Without -p or --file the text comes from stdin.")
    var file: String?

    @Flag(help: "Recognise special tokens such as <|im_start|> in the text.")
    var special = false

    @Flag(help: "Print each id with its token text.")
    var pieces = false

    func validate() throws {
        guard prompt == nil || file == nil else { throw ValidationError("give -p TEXT or --file PATH, not both") }
    }

    func run() throws {
        let (gguf, _) = try common.setUp()
        let tokenizer = try BPETokenizer(gguf: gguf)
        let text: String
        if let prompt {
            text = prompt
        } else if let file, file != "-" {
            text = try readTextFile(file)
        } else {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        }
        let ids = tokenizer.encode(text, addSpecial: true, parseSpecial: special)
        if pieces {
            for id in ids { print("\(id)\t\(tokenizer.decode([id]).debugDescription)") }
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}
