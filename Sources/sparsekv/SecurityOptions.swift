import ArgumentParser
import Foundation
import SparseKVCluster

/// `--keys DIR` / `--insecure` / `--server-key`: how a node or client secures its ZeroMQ
/// links. One of --keys and --insecure is required: plaintext is never the silent default.
struct SecurityOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "CURVE keys of this process: DIR/key, DIR/key.pub and DIR/authorized/ (one file per public key it accepts).",
        discussion: "Make them with `sparsekv keys generate --out DIR`; copy each peer's key.pub into authorized/. Default: $SPARSEKV_KEYS.",
        valueName: "DIR"))
    var keys: String?

    @Option(help: ArgumentHelp("The server's CURVE public key (Z85 text or a key.pub file), for an endpoint that does not end in #KEY.",
                               valueName: "KEY"))
    var serverKey: String?

    @Flag(help: "Run in plaintext: no authentication, no encryption (also: SPARSEKV_INSECURE=1).")
    var insecure = false

    func validate() throws {
        guard !(insecure && keys != nil) else { throw ValidationError("give either --keys DIR or --insecure, not both") }
    }

    /// The security to run with; throws the user-facing refusal when neither flag is given.
    /// $SPARSEKV_KEYS (a key directory) and $SPARSEKV_INSECURE=1 stand in for the flags, so
    /// that commands run by cluster/launch.sh reach its cluster.
    func security() throws -> NodeSecurity {
        let env = ProcessInfo.processInfo.environment
        if insecure || (keys == nil && env["SPARSEKV_INSECURE"] == "1") { return .insecure }
        guard let keys = keys ?? env["SPARSEKV_KEYS"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw ValidationError("""
                no --keys: this process would talk in plaintext. Run `sparsekv keys generate --out DIR`, \
                authorize the peers' key.pub files in DIR/authorized/, and pass --keys DIR; or pass --insecure \
                to run without authentication and encryption
                """)
        }
        var server = serverKey
        if let k = serverKey, FileManager.default.fileExists(atPath: k) { server = try CurveKeyPair.readKey(k) }
        return try NodeSecurity.load(keysDirectory: keys, serverKey: server)
    }
}
