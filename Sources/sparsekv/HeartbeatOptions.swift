import ArgumentParser
import SparseKVCluster

/// `--heartbeat-ms` and `--liveness`, shared by the coordinator and the workers (give
/// both the same values).
struct HeartbeatOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Milliseconds between two heartbeat pings from the coordinator to each worker.", valueName: "MS"))
    var heartbeatMs: Int = Int(WireProtocol.heartbeatInterval.components.seconds * 1000
        + WireProtocol.heartbeatInterval.components.attoseconds / 1_000_000_000_000_000)

    @Option(help: ArgumentHelp("Heartbeat intervals without a sign of life after which a worker (for the coordinator) or the coordinator (for a worker) counts as dead.",
                               valueName: "N"))
    var liveness: Int = WireProtocol.heartbeatLiveness

    func validate() throws {
        guard (1...60_000).contains(heartbeatMs) else { throw ValidationError("--heartbeat-ms must be 1...60000") }
        guard (1...1000).contains(liveness) else { throw ValidationError("--liveness must be 1...1000") }
    }

    var settings: HeartbeatMonitor.Settings {
        HeartbeatMonitor.Settings(interval: .milliseconds(heartbeatMs), liveness: liveness)
    }
}
