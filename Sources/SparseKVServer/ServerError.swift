import Foundation

/// Errors of the HTTP server that are not a client's fault (bad configuration, a model that
/// does not load, a cluster that is not reachable).
public enum ServerError: Error, LocalizedError, Sendable {
    case badListenAddress(String)
    case modelNotLoaded(path: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .badListenAddress(let text):
            return "'\(text)' is not HOST:PORT; give e.g. --http 127.0.0.1:8080"
        case .modelNotLoaded(let path, let reason):
            return "cannot load the model at \(path): \(reason); check --model"
        }
    }
}
