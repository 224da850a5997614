import Foundation

/// An error answered to an HTTP client, in OpenAI's shape:
/// `{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`, with its status.
///
/// Statuses: 400 for a request the server will never accept as sent (bad JSON, a wrong
/// type, an unknown field, a prompt over the context), 404 for an unknown model, 413 for a
/// body over the limit, 503 when the queue is full or the model/cluster is not ready,
/// 500 when generation failed after it was accepted.
public struct APIError: Error, LocalizedError, Sendable, Equatable {
    public var status: Int
    public var message: String
    /// OpenAI's `type`: invalid_request_error, server_error, ...
    public var type: String
    /// The request field at fault, if one is.
    public var param: String?
    /// A machine-readable code: invalid_json, unknown_field, context_length_exceeded, ...
    public var code: String?

    public init(status: Int, message: String, type: String, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var errorDescription: String? { message }

    public static func invalidJSON(_ detail: String) -> APIError {
        APIError(status: 400, message: "the request body is not valid JSON: \(detail)", type: "invalid_request_error", code: "invalid_json")
    }

    public static func invalid(_ message: String, param: String? = nil, code: String = "invalid_value") -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public static func unknownField(_ name: String) -> APIError {
        APIError(status: 400, message: "unrecognized request argument supplied: \(name); remove it (see README, HTTP API, for the fields the server takes)",
                 type: "invalid_request_error", param: name, code: "unknown_field")
    }

    public static func contextLengthExceeded(promptTokens: Int, contextLength: Int) -> APIError {
        APIError(status: 400, message: "the prompt has \(promptTokens) tokens; this server's context holds \(contextLength) positions, so at most \(contextLength - 1) prompt tokens fit; shorten the prompt",
                 type: "invalid_request_error", param: "messages", code: "context_length_exceeded")
    }

    public static func overloaded(queued: Int) -> APIError {
        APIError(status: 503, message: "the server is busy (\(queued) requests waiting); retry in a moment", type: "server_error", code: "server_overloaded")
    }

    public static func notReady(_ why: String) -> APIError {
        APIError(status: 503, message: "the server is not ready: \(why); retry once GET /health answers 200", type: "server_error", code: "not_ready")
    }

    public static func generationFailed(_ why: String) -> APIError {
        APIError(status: 500, message: "generation failed: \(why)", type: "server_error", code: "generation_failed")
    }

    /// The JSON body.
    public var json: [UInt8] {
        var error: [String: Any] = ["message": message, "type": type]
        error["param"] = param ?? NSNull()
        error["code"] = code ?? NSNull()
        let data = (try? JSONSerialization.data(withJSONObject: ["error": error], options: [.sortedKeys])) ?? Data()
        return [UInt8](data)
    }
}
