import Foundation

/// Counts bytes and messages sent and received, by peer and ``TrafficCategory``, for one
/// process. Thread-safe: several sockets on several threads may share one instance.
///
/// Only ``CountedSocket`` records into it, so every counted byte went through a socket;
/// bandwidth figures come from here, never from formulas.
public final class ByteCounters: @unchecked Sendable {
    // @unchecked: all mutable state is behind `lock`.
    private let lock = NSLock()
    private var byPeer: [String: TrafficByCategory] = [:]
    private var rejected = TrafficCount()

    public init() {}

    /// A consistent copy of all counters.
    public func snapshot() -> TrafficSnapshot {
        lock.withLock { TrafficSnapshot(byPeer: byPeer, rejected: rejected) }
    }

    /// Zeroes every counter (e.g. between benchmark phases).
    public func reset() {
        lock.withLock {
            byPeer = [:]
            rejected = TrafficCount()
        }
    }

    func recordSent(bytes: Int, category: TrafficCategory, peer: String) {
        lock.withLock {
            byPeer[peer, default: TrafficByCategory()][category].sentBytes &+= UInt64(bytes)
            byPeer[peer, default: TrafficByCategory()][category].sentMessages &+= 1
        }
    }

    /// A received message; `rejected` when it did not decode.
    func recordReceived(bytes: Int, category: TrafficCategory, peer: String, rejected isRejected: Bool = false) {
        lock.withLock {
            byPeer[peer, default: TrafficByCategory()][category].receivedBytes &+= UInt64(bytes)
            byPeer[peer, default: TrafficByCategory()][category].receivedMessages &+= 1
            if isRejected {
                rejected.receivedBytes &+= UInt64(bytes)
                rejected.receivedMessages &+= 1
            }
        }
    }
}
