import Foundation
import Hummingbird
import Logging
import NIOCore
import SparseKVEngine

/// The HTTP API: OpenAI's `POST /v1/chat/completions` and `POST /v1/completions`
/// (streamed as server-sent events with `"stream": true`), `GET /v1/models`,
/// `GET /health`, `GET /metrics`.
///
/// Every failure is answered as JSON in OpenAI's error shape with its status (see
/// ``APIError``); a failure after a stream started is sent as a last `data:` event.
public struct APIServer: Sendable {
    public let backend: any InferenceBackend
    public let metrics: ServerMetrics
    public let logger: Logger
    /// The largest request body taken (413 above).
    public var maxBodyBytes = 8 << 20
    private let started = Int(Date().timeIntervalSince1970)

    public init(backend: any InferenceBackend, metrics: ServerMetrics, logger: Logger) {
        self.backend = backend
        self.metrics = metrics
        self.logger = logger
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/health") { _, _ in await self.health() }
        router.get("/v1/models") { _, _ in self.models() }
        router.get("/metrics") { _, _ in
            await self.backend.refreshGauges()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: self.metrics.render(backend: self.backend))))
        }
        router.post("/v1/chat/completions") { request, _ in await self.complete(request, kind: .chat) }
        router.post("/v1/completions") { request, _ in await self.complete(request, kind: .text) }
        return router
    }

    // MARK: - Endpoints

    func health() async -> Response {
        if let why = await notReadyReason() {
            return json(status: 503, ReplyFormat.json(["status": "unavailable", "reason": why]))
        }
        return json(status: 200, ReplyFormat.json(["status": "ok"]))
    }

    /// The backend's reason not to serve, asked again after a refresh (a cluster's state
    /// comes from its coordinator's stats, which may be a poll old).
    private func notReadyReason() async -> String? {
        guard backend.notReadyReason() != nil else { return nil }
        await backend.refreshGauges()
        return backend.notReadyReason()
    }

    func models() -> Response {
        json(status: 200, ReplyFormat.json(["object": "list", "data": [
            ["id": backend.modelName, "object": "model", "created": started, "owned_by": "sparsekv"] as [String: Any],
        ]]))
    }

    func complete(_ request: Request, kind: CompletionKind) async -> Response {
        let endpoint = kind == .chat ? "chat" : "completions"
        var request = request
        let body: [UInt8]
        do {
            body = Array(try await request.collectBody(upTo: maxBodyBytes).readableBytesView)
        } catch {
            return fail(APIError(status: 413, message: "the request body is over \(maxBodyBytes) bytes", type: "invalid_request_error",
                                 code: "body_too_large"), endpoint: endpoint)
        }
        let planner = JobPlanner(tokenizer: backend.tokenizer, contextLength: backend.contextLength,
                                 acceptsTokenPrompts: backend.acceptsTokenPrompts)
        let job: GenerationJob, fields: SamplingFields
        do {
            switch kind {
            case .chat:
                let r = try ChatCompletionRequest.parse(body)
                job = try planner.job(for: r)
                fields = r.fields
            case .text:
                let r = try CompletionRequest.parse(body)
                job = try planner.job(for: r)
                fields = r.fields
            }
        } catch {
            return fail(error, endpoint: endpoint)
        }
        if let why = await notReadyReason() { return fail(APIError.notReady(why), endpoint: endpoint) }
        let handle: GenerationHandle
        do { handle = try backend.start(job) } catch { return fail(error, endpoint: endpoint) }
        let format = ReplyFormat(kind: kind, id: (kind == .chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.lowercased(),
                                 created: Int(Date().timeIntervalSince1970), model: backend.modelName)
        let run = CompletionRun(handle: handle, tokenizer: backend.tokenizer, stops: fields.stop, metrics: metrics)
        metrics.request(endpoint: endpoint, status: 200)
        if fields.stream {
            let includeUsage = fields.includeUsage, logger = logger
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                            body: ResponseBody { writer in
                                try await run.stream(format: format, includeUsage: includeUsage, writer: &writer, logger: logger)
                                try await writer.finish(nil)
                            })
        }
        do {
            let (text, summary, finish) = try await run.collect()
            return json(status: 200, format.reply(text: text, summary: summary, finishReason: finish))
        } catch {
            logger.error("generation failed: \(error.localizedDescription)")
            return json(status: (error as? APIError)?.status ?? 500, ((error as? APIError) ?? .generationFailed(error.localizedDescription)).json)
        }
    }

    // MARK: - Helpers

    private func fail(_ error: any Error, endpoint: String) -> Response {
        let e = (error as? APIError) ?? .generationFailed(error.localizedDescription)
        metrics.request(endpoint: endpoint, status: e.status)
        logger.info("refused a request: \(e.status) \(e.message)")
        var r = json(status: e.status, e.json)
        if e.status == 503 { r.headers[.retryAfter] = "1" }
        return r
    }

    private func json(status: Int, _ bytes: [UInt8]) -> Response {
        Response(status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
