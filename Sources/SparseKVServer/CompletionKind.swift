/// The two completion endpoints: they differ only in how replies are shaped.
public enum CompletionKind: Sendable {
    /// `POST /v1/chat/completions`: `message` / `delta` objects.
    case chat
    /// `POST /v1/completions`: `text`.
    case text
}
