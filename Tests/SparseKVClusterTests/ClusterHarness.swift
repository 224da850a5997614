import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// Real assets and the built `sparsekv` binary for the process tests.
enum ClusterAssets {
    static var home: String {
        ProcessInfo.processInfo.environment["SPARSEKV_HOME"]
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/sparsekv").path
    }
    static var model: String { home + "/models/SmolLM2-135M-Instruct.Q4_1.gguf" }
    static var repo: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
    static var dictionary: String { repo.appendingPathComponent("dicts/SmolLM2-135M-Instruct.Q4_1.csr.gguf").path }

    /// The `sparsekv` executable: $SPARSEKV_BIN, else next to the test bundle (same build
    /// directory), else the usual build directories.
    static var binary: String? {
        var candidates: [String] = []
        if let b = ProcessInfo.processInfo.environment["SPARSEKV_BIN"] { candidates.append(b) }
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        candidates.append(exe.deletingLastPathComponent().appendingPathComponent("sparsekv").path)
        for b in Bundle.allBundles {
            candidates.append(b.bundleURL.deletingLastPathComponent().appendingPathComponent("sparsekv").path)
        }
        for dir in [".build-nodes", ".build"] {
            candidates.append(repo.appendingPathComponent("\(dir)/release/sparsekv").path)
        }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// True when model and binary exist, and always under CI (CI set), where missing
    /// assets must fail the tests rather than skip them.
    static var available: Bool {
        (FileManager.default.fileExists(atPath: model) && binary != nil) || ProcessInfo.processInfo.environment["CI"] != nil
    }
}

/// Why a harness step failed.
struct HarnessError: Error, CustomStringConvertible {
    let description: String
}

/// A child process with its stdout and stderr in files.
final class Child {
    let process = Process()
    let name: String
    let stdoutPath: String
    let stderrPath: String

    init(_ name: String, arguments: [String], directory: String) throws {
        guard let bin = ClusterAssets.binary else { throw HarnessError(description: "no sparsekv binary; build it first (swift build -c release)") }
        self.name = name
        stdoutPath = directory + "/\(name).out"
        stderrPath = directory + "/\(name).log"
        FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: bin)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = "1"
        process.environment = env
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        try process.run()
    }

    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// The value of the first stdout line starting with `prefix + " "`, waiting for it.
    func line(_ prefix: String, timeout: Duration = .seconds(120)) throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            for l in stdout.split(separator: "\n") where l.hasPrefix(prefix + " ") {
                return String(l.dropFirst(prefix.count + 1))
            }
            guard process.isRunning else { throw HarnessError(description: "\(name) exited (\(process.terminationStatus)): \(stderr.suffix(2000))") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw HarnessError(description: "\(name) printed no \(prefix) line: \(stderr.suffix(2000))")
    }

    /// SIGTERM, then waits; true when the process exited within `timeout`.
    @discardableResult
    func terminate(timeout: Duration = .seconds(15)) -> Bool {
        if process.isRunning { process.terminate() }
        return waitForExit(timeout: timeout)
    }

    func waitForExit(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return false
        }
        return true
    }
}

/// A coordinator and workers started from the built binary on loopback.
final class LocalCluster {
    let directory: String
    let coordinator: Child
    var workers: [Child] = []
    private(set) var endpoint = ""
    var workerEndpoints: [String] = []

    /// True when the processes run with CURVE keys (``keys(_:)``), false for --insecure.
    let secure: Bool

    /// Starts the coordinator and `workers` workers, and waits until the cluster is ready.
    /// - Parameter secure: CURVE on every link: `sparsekv keys generate` for the
    ///   coordinator, each worker and a client ("client"), cross-authorized as
    ///   cluster/launch.sh does; else every process runs with --insecure.
    init(workers count: Int = 3, kv: String = "fp32", ctx: Int = 512, memory: String = "2G", coordinatorArguments: [String] = [],
         secure: Bool = false) throws {
        directory = NSTemporaryDirectory() + "sparsekv-cluster-\(UUID().uuidString.prefix(8))"
        self.secure = secure
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let names = ["coordinator", "client"] + (1...count).map { "w\($0)" }
        if secure {
            for n in names { try Self.generateKeys(into: directory + "/keys/" + n) }
            // The coordinator accepts the workers and the client; each worker the coordinator and the other workers.
            for n in names where n != "coordinator" { try Self.authorize(n, into: "coordinator", in: directory) }
            for w in names.dropFirst(2) {
                for n in names where n != w && n != "client" { try Self.authorize(n, into: w, in: directory) }
            }
        }
        var args = ["coordinator", "--model", ClusterAssets.model, "--listen", "tcp://127.0.0.1:0", "--workers", "\(count)",
                    "--kv", kv, "--ctx", "\(ctx)", "-t", "1"] + coordinatorArguments
        if kv.hasPrefix("csr") { args += ["--dict", ClusterAssets.dictionary] }
        let dir = directory
        let security = { (name: String) in secure ? ["--keys", dir + "/keys/" + name] : ["--insecure"] }
        coordinator = try Child("coordinator", arguments: args + security("coordinator"), directory: directory)
        do {
            endpoint = try coordinator.line("LISTENING")
            for i in 1...count {
                let w = try Child("w\(i)", arguments: ["worker", "--model", ClusterAssets.model, "--coordinator", endpoint,
                                                       "--id", "w\(i)", "--memory", memory, "-t", "1"] + security("w\(i)"),
                                  directory: directory)
                workers.append(w)
            }
            workerEndpoints = try workers.map { try $0.line("LISTENING") }
            _ = try coordinator.line("READY", timeout: .seconds(300))
        } catch {
            stop()
            throw error
        }
    }

    var all: [Child] { [coordinator] + workers }

    /// The key directory of process `name` (secure clusters).
    func keys(_ name: String) -> String { directory + "/keys/" + name }

    /// `--keys DIR` for process `name` in a secure cluster, else `--insecure`.
    func securityArguments(_ name: String) -> [String] { secure ? ["--keys", keys(name)] : ["--insecure"] }

    /// Copies `name`'s public key into `node`'s authorized/ directory.
    func authorize(_ name: String, into node: String) throws { try Self.authorize(name, into: node, in: directory) }

    static func authorize(_ name: String, into node: String, in directory: String) throws {
        let keys = directory + "/keys/"
        try FileManager.default.copyItem(atPath: keys + name + "/key.pub", toPath: keys + node + "/authorized/\(name).pub")
    }

    /// How an in-process client of this cluster connects: the "client" keys, or plaintext.
    func clientSecurity(_ name: String = "client") throws -> NodeSecurity {
        secure ? try NodeSecurity.load(keysDirectory: keys(name)) : .insecure
    }

    /// Runs `sparsekv keys generate --out DIR`.
    static func generateKeys(into dir: String) throws {
        guard let bin = ClusterAssets.binary else { throw HarnessError(description: "no sparsekv binary; build it first") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = ["keys", "generate", "--out", dir]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw HarnessError(description: "sparsekv keys generate --out \(dir) exited \(p.terminationStatus)") }
    }

    /// SIGTERM to every process; true when all exited in time.
    @discardableResult
    func stop() -> Bool {
        for c in all where c.process.isRunning { c.process.terminate() }
        return all.map { $0.waitForExit(timeout: .seconds(15)) }.allSatisfy { $0 }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// A raw socket in the test process, speaking to cluster processes directly.
final class TestPeer {
    let context: ZMQContext
    let socket: CountedSocket
    init(kind: ZMQSocket.Kind, routingID: String? = nil, connect: String? = nil, bind: String? = nil) throws {
        context = try ZMQContext()
        var options = ZMQSocketOptions()
        options.routingID = routingID.map { Array($0.utf8) }
        socket = try CountedSocket(context: context, kind: kind, counters: ByteCounters(), options: options)
        if let connect { try socket.connect(connect) }
        if let bind { boundEndpoint = try socket.bind(bind) } else { boundEndpoint = "" }
    }
    let boundEndpoint: String

    /// The next decodable message, skipping none; fails after `timeout`.
    func next(timeout: Duration = .seconds(60)) throws -> (WireMessage, ReceivedMessage) {
        guard let r = try socket.receive(timeout: timeout) else { throw HarnessError(description: "nothing received") }
        return (try r.message(), r)
    }

    deinit { socket.close() }
}
