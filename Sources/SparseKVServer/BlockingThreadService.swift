import Foundation
import ServiceLifecycle
import SparseKVCluster

/// Runs a blocking loop (the coordinator's, the cluster bridge's) on its own thread as a
/// service: graceful shutdown or cancellation raises its ``StopSignal``; the service ends
/// when the loop returns, and fails when it throws (which stops the whole group).
public struct BlockingThreadService: Service {
    public let name: String
    private let body: @Sendable (StopSignal) throws -> Void

    public init(name: String, _ body: @escaping @Sendable (StopSignal) throws -> Void) {
        self.name = name
        self.body = body
    }

    public func run() async throws {
        let stop = StopSignal()
        let name = name, body = body
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                    let t = Thread {
                        do {
                            try body(stop)
                            c.resume()
                        } catch {
                            c.resume(throwing: error)
                        }
                    }
                    t.name = name
                    t.stackSize = 16 << 20
                    t.start()
                }
            } onGracefulShutdown: {
                stop.raise()
            }
        } onCancel: {
            stop.raise()
        }
    }
}
