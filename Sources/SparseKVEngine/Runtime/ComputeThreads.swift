import Foundation
import Synchronization

/// How many threads the engine's own kernels (quantized products, dequantization,
/// attention) may use; OpenBLAS has its own setting (`BLASRuntime.setThreads`). The CLI's
/// `--threads` sets both. Defaults to the cores of this machine.
public enum ComputeThreads {
    private static let value = Atomic<Int>(max(1, ProcessInfo.processInfo.activeProcessorCount))

    public static var count: Int { value.load(ordering: .relaxed) }

    public static func set(_ n: Int) { value.store(max(1, n), ordering: .relaxed) }
}
