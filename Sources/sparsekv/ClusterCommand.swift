import ArgumentParser
import Foundation
import SparseKVCluster

struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Ask a running cluster's coordinator about itself.",
        subcommands: [Stats.self])

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the coordinator's byte counters (by peer and category) as JSON.")

        @Option(help: "The coordinator's endpoint (default: $SPARSEKV_CLUSTER).")
        var cluster: String?

        func run() throws {
            guard let endpoint = cluster ?? ProcessInfo.processInfo.environment["SPARSEKV_CLUSTER"] else {
                throw ValidationError("give --cluster ENDPOINT or set SPARSEKV_CLUSTER (cluster/launch.sh does)")
            }
            let stats = try ClusterClient(coordinator: endpoint).stats()
            print(try jsonString(stats.traffic))
        }
    }
}
