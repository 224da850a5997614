import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// CURVE between real processes: a cluster with keys on every link, refused keys, and
/// nodes that refuse to start in plaintext unless told to.
@Suite(.enabled(if: ClusterAssets.available && ZMQCurve.isAvailable, "needs the SmolLM2 model (scripts/setup.sh), a built sparsekv and CURVE"),
       .serialized)
struct CurveProcessTests {
    /// The same greedy tokens as a single process, with the client's link recorded by a
    /// relay: neither the prompt nor the generated text is on the wire.
    @Test func aClusterWithKeysGivesTheSingleProcessGreedyTokensAndNoPlaintextOnTheWire() throws {
        let cluster = try LocalCluster(workers: 2, kv: "csr:8", secure: true)
        let endpoint = try Endpoint(parsing: cluster.endpoint)
        let coordinatorKey = try CurveKeyPair.load(directory: cluster.keys("coordinator")).publicKey
        #expect(endpoint.serverKey == coordinatorKey, "the coordinator prints its endpoint with its public key")
        #expect(try cluster.workerEndpoints.allSatisfy { try Endpoint(parsing: $0).serverKey != nil })
        let recorder = try LoopbackRecorder(upstreamPort: try #require(endpoint.port))
        defer { recorder.stop() }
        let client = try ClusterClient(coordinator: "tcp://127.0.0.1:\(recorder.port)#\(coordinatorKey)", security: cluster.clientSecurity())
        let reply = try client.generate(GenerateRequestBody(prompt: ClusterProcessTests.prompt, maxTokens: 16, ignoreEOS: true))
        let expected = try ClusterProcessTests.localTokens(kv: "csr:8", maxTokens: 16, ctx: 512)
        #expect(reply.generatedTokens == expected, "cluster \(reply.generatedTokens) vs local \(expected)")
        #expect(recorder.bytes.count > ClusterProcessTests.prompt.utf8.count)
        #expect(!recorder.saw(ClusterProcessTests.prompt), "the prompt is not on the wire")
        let words = reply.text.split(separator: " ").filter { $0.count >= 5 }.map(String.init)
        #expect(!words.isEmpty && words.allSatisfy { !recorder.saw($0) }, "no word of the reply \(reply.text) is on the wire")
        #expect(cluster.stop(), "every process exits on SIGTERM")
    }

    /// A worker and clients whose keys the coordinator has not authorized: the worker
    /// cannot register, the clients cannot generate or drain, each says why, the
    /// coordinator logs each refusal with the key, and the cluster keeps serving.
    @Test func unauthorizedKeysAreRefusedWithAClearError() throws {
        let cluster = try LocalCluster(workers: 1, kv: "fp32", ctx: 128, secure: true)
        try LocalCluster.generateKeys(into: cluster.keys("intruder"))
        let intruder = try CurveKeyPair.load(directory: cluster.keys("intruder")).publicKey
        let keys = ["--keys", cluster.keys("intruder")]

        let worker = try Child("w9", arguments: ["worker", "--model", ClusterAssets.model, "--coordinator", cluster.endpoint,
                                                 "--id", "w9", "-t", "1"] + keys, directory: cluster.directory)
        #expect(worker.waitForExit(timeout: .seconds(60)), "the refused worker gives up")
        #expect(worker.process.terminationStatus != 0)
        #expect(worker.stderr.contains("authentication") && worker.stderr.contains("authorized/"), "\(worker.stderr.suffix(600))")

        let start = ContinuousClock.now
        let generate = try Child("gen", arguments: ["generate", "--cluster", cluster.endpoint, "-p", "Hello", "-n", "2"] + keys,
                                 directory: cluster.directory)
        let drain = try Child("drain", arguments: ["cluster", "drain", "w1", "--cluster", cluster.endpoint] + keys, directory: cluster.directory)
        for c in [generate, drain] {
            #expect(c.waitForExit(timeout: .seconds(30)), "\(c.name) gives up instead of hanging")
            #expect(c.process.terminationStatus != 0)
            #expect(c.stderr.contains("authentication") && c.stderr.contains("refused"), "\(c.name): \(c.stderr.suffix(600))")
        }
        #expect(ContinuousClock.now - start < .seconds(30))

        // A plaintext client hears that the coordinator wants CURVE.
        let plain = try ClusterClient(coordinator: cluster.endpoint, security: .insecure)
        #expect(throws: ZMQError.self) { _ = try plain.stats(timeout: .seconds(20)) }

        let log = cluster.coordinator.stderr
        #expect(log.contains("refused CURVE key \(intruder)"), "the coordinator logs the refused key")
        #expect(!log.contains("registered w9"))
        let client = try ClusterClient(coordinator: cluster.endpoint, security: cluster.clientSecurity())
        let reply = try client.generate(GenerateRequestBody(prompt: "Hello", maxTokens: 2, ignoreEOS: true))
        #expect(reply.generatedTokens.count == 2, "the authorized client is still served")
        #expect(cluster.stop())
    }

    /// Without --keys and without --insecure a node does not start, and says what to do.
    @Test func nodesNeedKeysOrAnExplicitInsecure() throws {
        let dir = NSTemporaryDirectory() + "sparsekv-nokeys-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let runs: [[String]] = [
            ["coordinator", "--model", ClusterAssets.model, "--listen", "tcp://127.0.0.1:0", "--workers", "1"],
            ["worker", "--model", ClusterAssets.model, "--coordinator", "tcp://127.0.0.1:1"],
            ["cluster", "stats", "--cluster", "tcp://127.0.0.1:1"],
            ["generate", "--cluster", "tcp://127.0.0.1:1", "-p", "Hello"],
        ]
        for (i, args) in runs.enumerated() {
            let c = try Child("run\(i)", arguments: args, directory: dir)
            #expect(c.waitForExit(timeout: .seconds(30)))
            #expect(c.process.terminationStatus != 0, "\(args[0]) refuses to start")
            #expect(c.stderr.contains("sparsekv keys generate") && c.stderr.contains("--insecure"), "\(args[0]): \(c.stderr)")
        }
    }
}
