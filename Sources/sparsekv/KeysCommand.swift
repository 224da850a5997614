import ArgumentParser
import Foundation
import SparseKVCluster

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "CURVE keys for authenticated, encrypted cluster links.",
        subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a key pair: DIR/key (secret, mode 0600), DIR/key.pub, and an empty DIR/authorized/.",
            discussion: """
                Give the directory to a node with --keys DIR. A node accepts only the public keys \
                that have a file in its authorized/ directory: copy each peer's key.pub there \
                (workers and clients into the coordinator's, the coordinator and the other workers \
                into each worker's). Prints the public key.
                """)

        @Option(help: ArgumentHelp("Directory for the keys (created if missing).", valueName: "DIR"))
        var out: String

        func run() throws {
            let pair = try CurveKeyPair.generate()
            try pair.write(to: out)
            print(pair.publicKey)
        }
    }
}
