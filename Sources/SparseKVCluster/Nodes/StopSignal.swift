import Foundation

/// A flag a signal handler (or a test) raises to ask a serving loop to finish; loops
/// check it between receives, so they stop within one receive timeout.
public final class StopSignal: @unchecked Sendable {
    // @unchecked: the flag is behind `lock`.
    private let lock = NSLock()
    private var raised = false

    public init() {}

    public func raise() { lock.withLock { raised = true } }

    public var isRaised: Bool { lock.withLock { raised } }
}
