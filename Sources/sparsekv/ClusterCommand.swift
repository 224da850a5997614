import ArgumentParser
import Foundation
import SparseKVCluster

struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Ask a running cluster's coordinator about itself, or drain a worker.",
        subcommands: [Stats.self, Drain.self])

    struct Endpoint: ParsableArguments {
        @Option(help: "The coordinator's endpoint (default: $SPARSEKV_CLUSTER).")
        var cluster: String?

        @OptionGroup var security: SecurityOptions

        /// A client that a SIGINT or SIGTERM interrupts.
        func client() throws -> ClusterClient {
            let security = try security.security()
            let stop = StopSignal()
            Self.signalSources = stopOnSignals(stop)
            return try ClusterClient(coordinator: try resolve(), stop: stop, security: security)
        }

        /// Kept for the process's life.
        nonisolated(unsafe) static var signalSources: [DispatchSourceSignal] = []

        func resolve() throws -> String {
            guard let endpoint = cluster ?? ProcessInfo.processInfo.environment["SPARSEKV_CLUSTER"] else {
                throw ValidationError("give --cluster ENDPOINT or set SPARSEKV_CLUSTER (cluster/launch.sh does)")
            }
            return endpoint
        }
    }

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the coordinator's byte counters (by peer and category) as JSON.",
            discussion: """
                The JSON has byPeer (peer -> category -> bytes and messages each way), rejected \
                (messages refused by the decoder), kvCacheBytes (the KV the node holds) and \
                sessionCount (the sessions it holds KV or state for). Given a worker's endpoint \
                instead of the coordinator's, the same for that worker.
                """)

        @OptionGroup var endpoint: Endpoint

        /// The stats reply as printed: the traffic's fields, then what the node holds.
        struct Printed: Encodable {
            let byPeer: [String: TrafficByCategory]
            let rejected: TrafficCount
            let kvCacheBytes: UInt64
            let sessionCount: Int
        }

        func run() throws {
            let stats = try endpoint.client().stats()
            print(try jsonString(Printed(byPeer: stats.traffic.byPeer, rejected: stats.traffic.rejected,
                                         kvCacheBytes: stats.kvCacheBytes, sessionCount: stats.sessionCount)))
        }
    }

    struct Drain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a worker's layers and every live session's KV to its pipeline neighbours, then let it go.",
            discussion: """
                Sessions pause between two steps while their KV moves (in the cache's own encoding, \
                CSR codes for a csr cache) and then keep generating. The drained worker exits. \
                With --baseline fp16 the same KV is also sent in dense fp16, checked by the receiver \
                and discarded, so both transfers are measured on the same sockets.
                """)

        @Argument(help: "The worker's id (as given to `sparsekv worker --id`).")
        var worker: String

        @OptionGroup var endpoint: Endpoint

        @Option(help: "Also measure the transfer in this encoding (fp16).")
        var baseline: String?

        @Option(help: "Start once every live session has generated at least this many tokens.")
        var afterTokens: Int = 0

        @Flag(help: "First wait (up to a minute) until the cluster has a live session.")
        var waitSession = false

        @Flag(help: "Print the coordinator's reply as JSON.")
        var json = false

        func validate() throws {
            guard afterTokens >= 0 else { throw ValidationError("--after-tokens must be >= 0") }
        }

        func run() throws {
            let client = try endpoint.client()
            if waitSession {
                let deadline = ContinuousClock.now + .seconds(60)
                while try client.stats().sessionCount == 0 {
                    guard ContinuousClock.now < deadline else { throw ValidationError("no live session within a minute") }
                    Thread.sleep(forTimeInterval: 0.02)
                }
            }
            let r = try client.drain(DrainRequestBody(workerID: worker, baseline: baseline ?? "", minGenerated: afterTokens))
            let report = DrainReport(r)
            if json {
                print(try jsonString(report))
                return
            }
            print("drained \(r.workerID) (layers \(r.layers.lowerBound)..<\(r.layers.upperBound)) in \(String(format: "%.3f", report.seconds)) s; \(r.sessionCount) live session(s) moved")
            for t in r.transfers {
                print(String(format: "  session %llu layers %d..<%d -> %@: %@ %@, %d tokens, %llu bytes on the wire, %.1f ms",
                             t.sessionID, t.layers.lowerBound, t.layers.upperBound, t.destination, t.encoding, t.mode.description,
                             t.tokenCount, t.wireBytes, Double(t.nanoseconds) / 1e6))
            }
            for (encoding, bytes) in report.wireBytesByEncoding.sorted(by: { $0.key < $1.key }) {
                print("  total \(encoding): \(bytes) bytes")
            }
        }
    }
}

/// `cluster drain --json` output.
struct DrainReport: Codable {
    struct Transfer: Codable {
        var sessionID: UInt64
        var firstLayer: Int
        var endLayer: Int
        var destination: String
        var encoding: String
        var mode: String
        var tokenCount: Int
        var payloadBytes: UInt64
        var wireBytes: UInt64
        var seconds: Double
    }

    var worker: String
    var firstLayer: Int
    var endLayer: Int
    var seconds: Double
    var sessionCount: Int
    var transfers: [Transfer]
    /// Sum of wire bytes per encoding (the installed one and any baseline).
    var wireBytesByEncoding: [String: UInt64]

    init(_ r: DrainReplyBody) {
        worker = r.workerID
        firstLayer = r.layers.lowerBound
        endLayer = r.layers.upperBound
        seconds = Double(r.nanoseconds) / 1e9
        sessionCount = r.sessionCount
        transfers = r.transfers.map {
            Transfer(sessionID: $0.sessionID, firstLayer: $0.layers.lowerBound, endLayer: $0.layers.upperBound, destination: $0.destination,
                     encoding: $0.encoding, mode: $0.mode.description, tokenCount: $0.tokenCount, payloadBytes: $0.payloadBytes,
                     wireBytes: $0.wireBytes, seconds: Double($0.nanoseconds) / 1e9)
        }
        wireBytesByEncoding = r.transfers.reduce(into: [:]) { $0[$1.encoding, default: 0] += $1.wireBytes }
    }
}
