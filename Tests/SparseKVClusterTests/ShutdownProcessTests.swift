import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// SIGTERM and lost peers end every process without a hang or an orphan, and whoever was
/// waiting gets an error that says why.
@Suite(.enabled(if: ClusterAssets.available, "needs the SmolLM2 model (scripts/setup.sh) and a built sparsekv"), .serialized)
struct ShutdownProcessTests {
    /// The coordinator stops at once with a session in flight: the client hears that it is
    /// shutting down, and the workers are told to exit and do.
    @Test func sigtermEndsACoordinatorWithASessionInFlightAndItsWorkers() throws {
        let cluster = try LocalCluster(workers: 2)
        let control = try ClusterClient(coordinator: cluster.endpoint)
        let running = DrainHandoffProcessTests.Background(endpoint: cluster.endpoint, FailoverProcessTests.request)
        let deadline = ContinuousClock.now + .seconds(60)
        while try control.stats().sessionCount == 0, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.02) }
        cluster.coordinator.process.terminate()
        #expect(cluster.coordinator.waitForExit(timeout: .seconds(5)), "the coordinator exits without needing a SIGKILL")
        #expect(cluster.coordinator.process.terminationStatus == 0)
        do {
            _ = try running.wait()
            Issue.record("the session cannot have finished")
        } catch NodeError.refused(_, let code, let message) {
            #expect(code == .shuttingDown, "\(message)")
        }
        for w in cluster.workers {
            #expect(w.waitForExit(timeout: .seconds(5)), "\(w.name) exits when the coordinator goes")
            #expect(w.process.terminationStatus == 0, "\(w.name) was told to shut down: \(w.stderr.suffix(500))")
        }
    }

    /// A coordinator killed outright cannot say goodbye: its workers notice the missing
    /// pings and exit on their own, saying why.
    @Test func workersWhoseCoordinatorIsKilledExitOnTheirOwn() throws {
        let cluster = try LocalCluster(workers: 2)
        kill(cluster.coordinator.process.processIdentifier, SIGKILL)
        for w in cluster.workers {
            #expect(w.waitForExit(timeout: .seconds(10)), "\(w.name) exits without the coordinator")
            #expect(w.process.terminationStatus != 0)
            #expect(w.stderr.contains("nothing heard from"), "\(w.name): \(w.stderr.suffix(500))")
        }
    }

    /// A client waiting for a coordinator that does not answer (here: stopped) ends on
    /// SIGTERM with an error saying it was interrupted.
    @Test func sigtermEndsAWaitingClient() throws {
        let directory = NSTemporaryDirectory() + "sparsekv-shutdown-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let coordinator = try Child("coordinator", arguments: ["coordinator", "--insecure", "--model", ClusterAssets.model, "--listen", "tcp://127.0.0.1:0",
                                                               "--workers", "1", "--ctx", "64", "-t", "1"], directory: directory)
        defer { coordinator.terminate() }
        let endpoint = try coordinator.line("LISTENING")
        kill(coordinator.process.processIdentifier, SIGSTOP)
        defer { kill(coordinator.process.processIdentifier, SIGCONT) }
        let client = try Child("client", arguments: ["generate", "--insecure", "--model", ClusterAssets.model, "--cluster", endpoint, "-p", "Hello", "-n", "1"],
                               directory: directory)
        Thread.sleep(forTimeInterval: 1)
        #expect(client.process.isRunning, "the client waits for the stopped coordinator")
        client.process.terminate()
        #expect(client.waitForExit(timeout: .seconds(5)), "SIGTERM ends the waiting client")
        #expect(client.process.terminationStatus != 0)
        #expect(client.stderr.contains("interrupted"), "\(client.stderr.suffix(500))")
    }
}
