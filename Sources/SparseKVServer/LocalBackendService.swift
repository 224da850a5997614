import ServiceLifecycle

/// Runs a ``LocalBackend``'s compute thread as a service: on graceful shutdown it refuses
/// new requests, finishes the running and queued ones, and ends.
public struct LocalBackendService: Service {
    public let backend: LocalBackend

    public init(backend: LocalBackend) { self.backend = backend }

    public func run() async throws {
        backend.startComputing()
        try? await gracefulShutdown()
        await backend.finishAndStop()
    }
}
