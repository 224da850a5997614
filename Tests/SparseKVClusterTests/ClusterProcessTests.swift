import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// Real processes on loopback: a coordinator and workers spawned from the built binary.
@Suite(.enabled(if: ClusterAssets.available, "needs the SmolLM2 model (scripts/setup.sh) and a built sparsekv"), .serialized)
struct ClusterProcessTests {
    static let prompt = "The capital of France is"

    /// Greedy tokens of a single-process run with the same settings: `sparsekv generate`
    /// in its own process with -t 1, as the cluster's processes run (the CSR encoder's BLAS
    /// sums depend on the thread count, and changing this test process's OpenBLAS threads
    /// would disturb suites running in parallel).
    static func localTokens(kv: String, maxTokens: Int, ctx: Int, prompt: String = ClusterProcessTests.prompt) throws -> [Int32] {
        guard let bin = ClusterAssets.binary else { throw HarnessError(description: "no sparsekv binary; build it first") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        var args = ["generate", "--model", ClusterAssets.model, "-p", prompt, "-n", "\(maxTokens)", "--kv", kv,
                    "--ctx", "\(ctx)", "-t", "1", "--ignore-eos", "--json"]
        if kv.hasPrefix("csr") { args += ["--dict", ClusterAssets.dictionary] }
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw HarnessError(description: "local sparsekv generate exited \(p.terminationStatus)") }
        struct Result: Decodable { let generatedTokens: [Int32] }
        return try JSONDecoder().decode(Result.self, from: data).generatedTokens
    }

    @Test(arguments: ["fp32", "csr:8"])
    func threeWorkersGiveTheSingleProcessGreedyTokens(kv: String) throws {
        let cluster = try LocalCluster(workers: 3, kv: kv)
        let client = try ClusterClient(coordinator: cluster.endpoint)
        let reply = try client.generate(GenerateRequestBody(prompt: Self.prompt, maxTokens: 24, ignoreEOS: true))
        let expected = try Self.localTokens(kv: kv, maxTokens: 24, ctx: 512)
        #expect(reply.generatedTokens.count == 24)
        #expect(reply.generatedTokens == expected, "cluster \(reply.generatedTokens) vs local \(expected)")
        #expect(reply.activationBytesSent > 0 && reply.activationBytesReceived > 0)
        #expect(cluster.stop(), "every process exits on SIGTERM")
    }

    /// Two clients one after the other, and a long prompt that takes two prefill chunks.
    @Test func requestsFromDifferentClientsDoNotDisturbEachOther() throws {
        let cluster = try LocalCluster(workers: 2, kv: "fp32", ctx: 1024)
        let a = try ClusterClient(coordinator: cluster.endpoint), b = try ClusterClient(coordinator: cluster.endpoint)
        let first = try a.generate(GenerateRequestBody(prompt: Self.prompt, maxTokens: 8, ignoreEOS: true))
        let long = String(repeating: "Paris is a city in France. ", count: 90)
        let other = try b.generate(GenerateRequestBody(prompt: long, maxTokens: 4, ignoreEOS: true))
        #expect(other.promptTokens.count > 512, "the long prompt spans two prefill chunks")
        let again = try a.generate(GenerateRequestBody(prompt: Self.prompt, maxTokens: 8, ignoreEOS: true))
        #expect(first.generatedTokens == again.generatedTokens)
        let local = try Self.localTokens(kv: "fp32", maxTokens: 8, ctx: 1024)
        #expect(first.generatedTokens == local)
        #expect(cluster.stop())
    }

    @Test func malformedMessagesDoNotBringTheCoordinatorDown() throws {
        let cluster = try LocalCluster(workers: 2)
        let raw = try ZMQSocket(context: ZMQContext(), kind: .dealer)
        try raw.connect(cluster.endpoint)
        defer { raw.close() }
        let valid = try WireMessage(.ping(nonce: 5), requestID: 9).encode()
        let garbage: [[UInt8]] = [
            [], [1, 2, 3], Array(repeating: 0xFF, count: 64), Array(valid.prefix(20)),
            valid + [0], Array(valid.prefix(6)) + [0x7F] + Array(valid.dropFirst(7)),
            try WireMessage(.activations(ActivationsBody(phase: .decode, nextLayer: 30, startPosition: 0, tokenCount: 1,
                                                         hiddenDim: 576, hidden: [Float](repeating: 0, count: 576))),
                            sessionID: 77).encode(),
        ]
        for g in garbage {
            try raw.send([g], timeout: .seconds(5))
            let answer = try #require(try raw.receive(timeout: .seconds(10)), "the coordinator answers every message")
            let m = try WireMessage.decode(answer[0])
            guard case .error = m.body else { Issue.record("expected an error, got \(m.kind)"); continue }
        }
        try raw.send([try WireMessage(.shardReady(ShardReadyBody(layers: 0..<3, weightBytes: 1)), requestID: 3).encode()], timeout: .seconds(5))
        _ = try raw.receive(timeout: .seconds(10))
        try raw.send([valid], timeout: .seconds(5))
        let pong = try WireMessage.decode(try #require(try raw.receive(timeout: .seconds(10)))[0])
        #expect(pong == WireMessage(.pong(nonce: 5), requestID: 9))
        let reply = try ClusterClient(coordinator: cluster.endpoint).generate(GenerateRequestBody(prompt: Self.prompt, maxTokens: 4))
        #expect(reply.generatedTokens.count == 4, "still serving")
        #expect(cluster.coordinator.process.isRunning && cluster.workers.allSatisfy(\.process.isRunning))
        #expect(cluster.stop())
    }

    /// Two clients at the same time: their sessions interleave in the pipeline and each
    /// gets the tokens of its own single-process run.
    @Test func concurrentClientsGetTheirOwnTokens() throws {
        let cluster = try LocalCluster(workers: 3)
        let prompts = ["The capital of France is", "Once upon a time, there was a"]
        let results = ResultBox(count: prompts.count)
        let group = DispatchGroup()
        for (i, p) in prompts.enumerated() {
            let endpoint = cluster.endpoint
            DispatchQueue.global().async(group: group) {
                results.set(i, Result { try ClusterClient(coordinator: endpoint).generate(GenerateRequestBody(prompt: p, maxTokens: 16, ignoreEOS: true)) })
            }
        }
        group.wait()
        for (i, p) in prompts.enumerated() {
            let reply = try #require(results.get(i)).get()
            let local = try Self.localTokens(kv: "fp32", maxTokens: 16, ctx: 512, prompt: p)
            #expect(reply.generatedTokens == local, "prompt \(i)")
        }
        #expect(cluster.stop())
    }

    /// After a generation, what the coordinator counted to/from each worker equals what
    /// that worker counted from/to the coordinator, and likewise between neighbours.
    @Test func byteCountersAgreeBetweenWorkersAndCoordinator() throws {
        let cluster = try LocalCluster(workers: 3)
        let client = try ClusterClient(coordinator: cluster.endpoint)
        _ = try client.generate(GenerateRequestBody(prompt: Self.prompt, maxTokens: 6))
        Thread.sleep(forTimeInterval: 0.5)  // dropSession messages reach the workers
        let coordinator = try client.stats().traffic
        var workerStats: [TrafficSnapshot] = []
        for endpoint in cluster.workerEndpoints {
            let peer = try TestPeer(kind: .dealer, routingID: "stats-probe", connect: endpoint)
            try peer.socket.send(WireMessage(.statsRequest, requestID: 1), timeout: .seconds(5))
            let (m, _) = try peer.next()
            guard case .statsReply(let s) = m.body else { throw HarnessError(description: "expected statsReply, got \(m.kind)") }
            workerStats.append(s.traffic)
        }
        var hops = 0
        for (i, w) in workerStats.enumerated() {
            let id = "w\(i + 1)"
            let seenByCoordinator = try #require(coordinator.byPeer[id]), seenByWorker = try #require(w.byPeer[coordinatorPeerID])
            for c in TrafficCategory.allCases {
                #expect(seenByCoordinator[c].sentBytes == seenByWorker[c].receivedBytes, "\(c) coordinator -> \(id)")
                #expect(seenByCoordinator[c].receivedBytes == seenByWorker[c].sentBytes, "\(c) \(id) -> coordinator")
                #expect(seenByCoordinator[c].sentMessages == seenByWorker[c].receivedMessages)
            }
            // Pipeline order is registration order; a worker labels its next hop by endpoint
            // (the last one's link to its replica holder, the first, carries KV only).
            if let (endpoint, sent) = w.byPeer.first(where: { $0.key.hasPrefix("tcp://") && $0.value[.activations].sentBytes > 0 }) {
                let j = try #require(cluster.workerEndpoints.firstIndex(of: endpoint))
                let received = try #require(workerStats[j].byPeer[id])
                #expect(sent[.activations].sentBytes == received[.activations].receivedBytes && sent[.activations].sentBytes > 0)
                hops += 1
            }
        }
        #expect(hops == 2, "two worker-to-worker links")
        let returned = workerStats.filter { ($0.byPeer[coordinatorPeerID]?[.activations].sentBytes ?? 0) > 0 }
        let entered = workerStats.filter { ($0.byPeer[coordinatorPeerID]?[.activations].receivedBytes ?? 0) > 0 }
        #expect(returned.count == 1 && entered.count == 1, "states enter at the first worker and leave from the last")
        #expect(cluster.stop())
    }
}

/// Registration and dictionary checks, with the test process playing one side.
@Suite(.enabled(if: ClusterAssets.available, "needs the SmolLM2 model (scripts/setup.sh) and a built sparsekv"), .serialized)
struct ClusterRefusalTests {
    static func fingerprint() throws -> String {
        try LlamaModel(path: ClusterAssets.model, layers: 0..<0, embeddings: false, head: false).fingerprint
    }

    /// A fake worker: another model's fingerprint is refused; with the right one it gets
    /// an assignment and the dictionary, and an ack of another hash is refused and keeps
    /// the cluster from serving.
    @Test func coordinatorRefusesOtherModelAndWrongDictionaryAck() throws {
        let dir = NSTemporaryDirectory() + "sparsekv-refusal-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let coordinator = try Child("coordinator", arguments: [
            "coordinator", "--insecure", "--model", ClusterAssets.model, "--listen", "tcp://127.0.0.1:0", "--workers", "1",
            "--kv", "csr:8", "--dict", ClusterAssets.dictionary, "--ctx", "256", "-t", "1"], directory: dir)
        defer { coordinator.terminate() }
        let endpoint = try coordinator.line("LISTENING")

        let inbox = try TestPeer(kind: .router, bind: "tcp://127.0.0.1:*")
        let up = try TestPeer(kind: .dealer, routingID: "fake", connect: endpoint)
        let me = try Endpoint(parsing: inbox.boundEndpoint)
        try up.socket.send(WireMessage(.register(RegisterBody(workerID: "fake", peerEndpoint: me, memoryBudgetBytes: 1 << 31,
                                                              modelFingerprint: String(repeating: "ab", count: 32))), requestID: 1))
        let (refusal, _) = try up.next()
        #expect(refusal.body.kind == .error)
        if case .error(let e) = refusal.body { #expect(e.code == .modelMismatch) }

        try up.socket.send(WireMessage(.register(RegisterBody(workerID: "fake", peerEndpoint: me, memoryBudgetBytes: 1 << 31,
                                                              modelFingerprint: try Self.fingerprint())), requestID: 2))
        let (ack, _) = try up.next()
        #expect(ack.body == .registerAck(workerIndex: 0))
        let (assignment, _) = try inbox.next()
        guard case .shardAssignment(let a) = assignment.body else { throw HarnessError(description: "expected an assignment, got \(assignment.kind)") }
        #expect(a.layers == 0..<30 && a.nextHop == .coordinator && a.kvSpec == "csr:8")
        let (dictionary, _) = try inbox.next()
        guard case .dictionary(let d) = dictionary.body else { throw HarnessError(description: "expected the dictionary, got \(dictionary.kind)") }
        let projectHash = try CSRDictionary.load(path: ClusterAssets.dictionary).contentHash
        #expect(d.contentHash == a.dictionaryHash && d.contentHash == projectHash)

        try up.socket.send(WireMessage(.shardReady(ShardReadyBody(layers: a.layers, weightBytes: 1))))
        try up.socket.send(WireMessage(.dictionaryAck(contentHash: String(repeating: "0", count: 64))))
        let (mismatch, _) = try inbox.next()
        guard case .error(let e) = mismatch.body else { throw HarnessError(description: "expected an error, got \(mismatch.kind)") }
        #expect(e.code == .dictionaryMismatch)

        let client = try ClusterClient(coordinator: endpoint)
        #expect(throws: NodeError.self, "no inference before every worker acked the right hash") {
            _ = try client.generate(GenerateRequestBody(prompt: "Hi", maxTokens: 2), timeout: .seconds(30))
        }
        #expect(coordinator.process.isRunning)
        #expect(coordinator.terminate(), "the coordinator exits on SIGTERM")
    }

    /// A fake coordinator: a real worker refuses a dictionary whose announced hash is not
    /// the file's, and does not ack it.
    @Test func workerRefusesDictionaryWithAnotherHash() throws {
        let dir = NSTemporaryDirectory() + "sparsekv-refusal-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let inbox = try TestPeer(kind: .router, bind: "tcp://127.0.0.1:*")
        let worker = try Child("w1", arguments: ["worker", "--insecure", "--model", ClusterAssets.model, "--coordinator", inbox.boundEndpoint,
                                                 "--id", "w1", "-t", "1"] + KVTransferProcessTests.patient, directory: dir)
        defer { worker.terminate() }
        let (register, from) = try inbox.next()
        guard case .register(let r) = register.body else { throw HarnessError(description: "expected register, got \(register.kind)") }
        let fingerprint = try ClusterRefusalTests.fingerprint()
        #expect(r.workerID == "w1" && r.modelFingerprint == fingerprint)
        guard let routingID = from.routingID else { throw HarnessError(description: "no routing id") }
        try inbox.socket.send(WireMessage(.registerAck(workerIndex: 0), requestID: register.requestID), to: routingID)
        let link = try TestPeer(kind: .dealer, routingID: coordinatorPeerID, connect: r.peerEndpoint.description)
        let real = try CSRDictionary.load(path: ClusterAssets.dictionary)
        let wrong = String(repeating: "1", count: 64)
        try link.socket.send(WireMessage(.shardAssignment(ShardAssignmentBody(
            layers: 0..<2, modelLayers: 30, kvSpec: "csr:8", dictionaryHash: wrong, contextCapacity: 64, nextHop: .coordinator))))
        let (ready, _) = try inbox.next()
        #expect(ready.body == .shardReady(ShardReadyBody(layers: 0..<2, weightBytes: ready.body.shardWeightBytes)))
        try link.socket.send(WireMessage(.dictionary(DictionaryBody(contentHash: wrong, gguf: [UInt8](try real.ggufData())))))
        let (answer, _) = try inbox.next()
        guard case .error(let e) = answer.body else { throw HarnessError(description: "expected an error, got \(answer.kind)") }
        #expect(e.code == .dictionaryMismatch)
        #expect(e.message.contains(real.contentHash))
        try link.socket.send(WireMessage(.ping(nonce: 3), requestID: 4))
        let (pong, _) = try inbox.next()
        #expect(pong == WireMessage(.pong(nonce: 3), requestID: 4), "the worker keeps serving")
        try link.socket.send(WireMessage(.shutdown(reason: "test over")))
        #expect(worker.waitForExit(timeout: .seconds(10)), "the worker exits on a shutdown message")
    }

    /// A worker whose budget cannot hold its share: the coordinator says which and why,
    /// tells the workers, and every process exits.
    @Test func aWorkerWithTooLittleMemoryIsAnErrorThatSaysSo() throws {
        let dir = NSTemporaryDirectory() + "sparsekv-memory-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let coordinator = try Child("coordinator", arguments: [
            "coordinator", "--insecure", "--model", ClusterAssets.model, "--listen", "tcp://127.0.0.1:0", "--workers", "2", "--ctx", "512", "-t", "1"],
                                    directory: dir)
        defer { coordinator.terminate() }
        let endpoint = try coordinator.line("LISTENING")
        let big = try Child("big", arguments: ["worker", "--insecure", "--model", ClusterAssets.model, "--coordinator", endpoint, "--id", "big",
                                               "--memory", "4G", "-t", "1"], directory: dir)
        defer { big.terminate() }
        _ = try big.line("LISTENING")
        Thread.sleep(forTimeInterval: 0.5)  // registration order: big first
        let small = try Child("small", arguments: ["worker", "--insecure", "--model", ClusterAssets.model, "--coordinator", endpoint, "--id", "small",
                                                   "--memory", "1M", "-t", "1"], directory: dir)
        defer { small.terminate() }
        #expect(coordinator.waitForExit(timeout: .seconds(60)), "the coordinator gives up")
        #expect(coordinator.process.terminationStatus != 0)
        #expect(coordinator.stderr.contains("small") && coordinator.stderr.contains("--memory"), "\(coordinator.stderr.suffix(800))")
        #expect(big.waitForExit(timeout: .seconds(20)) && small.waitForExit(timeout: .seconds(20)), "workers exit too")
    }

    /// cluster/launch.sh without a command serves until SIGTERM, then stops every process.
    @Test func launcherStopsEveryProcessOnSIGTERM() throws {
        let dir = NSTemporaryDirectory() + "sparsekv-launch-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bin = try #require(ClusterAssets.binary)
        let p = Process()
        // The test runner's threads block most signals and a spawned process inherits that
        // mask, under which bash never sees SIGTERM; start the launcher with a clear mask,
        // as a shell would.
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execvp(sys.argv[1], sys.argv[1:])",
                       "/bin/bash", ClusterAssets.repo.appendingPathComponent("cluster/launch.sh").path, "--bin", bin, "--model", ClusterAssets.model,
                       "-n", "3", "--ctx", "256", "--logs", dir]
        try p.run()
        let deadline = ContinuousClock.now + .seconds(120)
        while !FileManager.default.fileExists(atPath: dir + "/pids"), p.isRunning, ContinuousClock.now < deadline {
            Thread.sleep(forTimeInterval: 0.1)
        }
        let pids = try String(contentsOfFile: dir + "/pids", encoding: .utf8).split(separator: "\n").compactMap { Int32($0) }
        #expect(pids.count == 4)
        for pid in pids { #expect(kill(pid, 0) == 0, "process \(pid) runs") }
        p.terminate()
        let stopDeadline = ContinuousClock.now + .seconds(30)
        while p.isRunning, ContinuousClock.now < stopDeadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!p.isRunning, "the launcher exits on SIGTERM")
        if p.isRunning {  // clean up what this test started
            kill(p.processIdentifier, SIGKILL)
            for pid in pids { kill(-pid, SIGKILL) }
        }
        for pid in pids { #expect(kill(pid, 0) != 0, "process \(pid) is gone") }
    }

    /// cluster/launch.sh -- CMD: runs CMD against a ready cluster, then leaves no process behind.
    @Test func launcherRunsACommandAndStopsEveryProcess() throws {
        let dir = NSTemporaryDirectory() + "sparsekv-launch-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bin = try #require(ClusterAssets.binary)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [ClusterAssets.repo.appendingPathComponent("cluster/launch.sh").path, "--bin", bin, "--model", ClusterAssets.model,
                       "-n", "2", "--ctx", "256", "--logs", dir, "--",
                       "/bin/sh", "-c", "\"\(bin)\" generate --cluster \"$SPARSEKV_CLUSTER\" -p 'The capital of France is' -n 5 --json > \(dir)/result.json"]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let json = try String(contentsOfFile: dir + "/result.json", encoding: .utf8)
        #expect(json.contains("\"generatedTokens\""))
        let pids = try String(contentsOfFile: dir + "/pids", encoding: .utf8).split(separator: "\n").compactMap { Int32($0) }
        #expect(pids.count == 3)
        for pid in pids { #expect(kill(pid, 0) != 0, "process \(pid) is gone") }
    }
}

extension WireBody {
    /// The weight bytes of a shardReady body (0 otherwise), for comparisons.
    var shardWeightBytes: UInt64 {
        if case .shardReady(let b) = self { return b.weightBytes }
        return 0
    }
}

/// The shard plan, without processes.
struct ShardPlannerTests {
    @Test func equalBudgetsSplitEvenlyAndContiguously() throws {
        let plan = try ShardPlanner.plan(layerCount: 30, budgets: [100, 100, 100], bytesPerLayer: 1)
        #expect(plan == [0..<10, 10..<20, 20..<30])
    }

    @Test func budgetsWeightTheSplit() throws {
        let plan = try ShardPlanner.plan(layerCount: 30, budgets: [200, 100, 100], bytesPerLayer: 1)
        #expect(plan == [0..<14, 14..<22, 22..<30])  // 1 each + 27 spare in 2:1:1, largest remainders
        #expect(plan.map(\.count).reduce(0, +) == 30)
    }

    @Test func aBudgetTooSmallForItsShareIsAnErrorNamingTheWorker() {
        #expect {
            try ShardPlanner.plan(layerCount: 30, budgets: [1000, 1000, 5], bytesPerLayer: 10, names: ["a", "b", "tiny"])
        } throws: { error in
            guard case NodeError.insufficientMemory(let why) = error else { return false }
            return why.contains("tiny") && why.contains("--memory")
        }
    }
}

/// Results filled in from several threads.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<GenerateReplyBody, any Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: Result<GenerateReplyBody, any Error>) { lock.withLock { results[i] = r } }
    func get(_ i: Int) -> Result<GenerateReplyBody, any Error>? { lock.withLock { results[i] } }
}
