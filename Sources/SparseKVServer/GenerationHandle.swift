/// A generation in progress: its events, and a way to stop it early (a stop sequence
/// found, the client gone). Cancelling ends the stream with a `cancelled` summary at the
/// backend's next step.
public struct GenerationHandle: Sendable {
    public let events: AsyncThrowingStream<GenerationEvent, any Error>
    public let cancel: @Sendable () -> Void

    public init(events: AsyncThrowingStream<GenerationEvent, any Error>, cancel: @escaping @Sendable () -> Void) {
        self.events = events
        self.cancel = cancel
    }
}
