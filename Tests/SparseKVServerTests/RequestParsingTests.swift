import Foundation
import Testing
@testable import SparseKVServer

private func body(_ s: String) -> [UInt8] { Array(s.utf8) }

private func apiError(_ f: () throws -> Void) -> APIError? {
    do { try f() } catch let e as APIError { return e } catch { return nil }
    return nil
}

@Suite("HTTP request parsing")
struct RequestParsingTests {
    @Test func chatRequestTakesOpenAIsFields() throws {
        let r = try ChatCompletionRequest.parse(body("""
            {"model":"m","messages":[{"role":"system","content":"Be brief."},
             {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
             "max_tokens":7,"temperature":0,"top_p":0.5,"seed":42,"stop":"END","stream":true,
             "stream_options":{"include_usage":true}}
            """))
        #expect(r.messages == [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi there")])
        #expect(r.fields.maxTokens == 7 && r.fields.temperature == 0 && r.fields.topP == 0.5 && r.fields.seed == 42)
        #expect(r.fields.stop == ["END"] && r.fields.stream && r.fields.includeUsage)
        let sampling = r.fields.samplingOptions(randomSeed: 9)
        #expect(sampling.temperature == 0 && sampling.topP == 0.5 && sampling.seed == 42 && sampling.topK == 40)
    }

    @Test func defaultsAreOpenAIs() throws {
        let r = try ChatCompletionRequest.parse(body(#"{"messages":[{"role":"user","content":"x"}]}"#))
        #expect(r.fields.maxTokens == nil && !r.fields.stream && r.fields.stop.isEmpty)
        let s = r.fields.samplingOptions(randomSeed: 123)
        #expect(s.temperature == 1 && s.topP == 1 && s.seed == 123)
        // max_completion_tokens is the newer name of max_tokens.
        #expect(try ChatCompletionRequest.parse(body(#"{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":3}"#)).fields.maxTokens == 3)
    }

    @Test func unknownFieldsAreRefusedByName() {
        let top = apiError { _ = try ChatCompletionRequest.parse(body(#"{"messages":[{"role":"user","content":"x"}],"tempurature":0.2}"#)) }
        #expect(top?.status == 400 && top?.code == "unknown_field" && top?.param == "tempurature")
        let inMessage = apiError { _ = try ChatCompletionRequest.parse(body(#"{"messages":[{"role":"user","content":"x","colour":1}]}"#)) }
        #expect(inMessage?.code == "unknown_field" && inMessage?.param == "colour")
        let inOptions = apiError { _ = try ChatCompletionRequest.parse(body(#"{"messages":[{"role":"user","content":"x"}],"stream_options":{"x":1}}"#)) }
        #expect(inOptions?.code == "unknown_field")
        let completion = apiError { _ = try CompletionRequest.parse(body(#"{"prompt":"x","messages":[]}"#)) }
        #expect(completion?.code == "unknown_field" && completion?.param == "messages")
    }

    @Test func badJSONAndWrongTypesAre400() {
        let syntax = apiError { _ = try ChatCompletionRequest.parse(body(#"{"messages": [ "#)) }
        #expect(syntax?.status == 400 && syntax?.code == "invalid_json")
        let notObject = apiError { _ = try ChatCompletionRequest.parse(body("[1,2]")) }
        #expect(notObject?.status == 400)
        let type = apiError { _ = try ChatCompletionRequest.parse(body(#"{"messages":[{"role":"user","content":"x"}],"max_tokens":"many"}"#)) }
        #expect(type?.status == 400 && type?.param == "max_tokens")
        let missing = apiError { _ = try ChatCompletionRequest.parse(body(#"{"model":"m"}"#)) }
        #expect(missing?.status == 400 && missing?.param == "messages")
    }

    @Test func outOfRangeValuesAre400() {
        let cases = [
            #""max_tokens":0"#, #""temperature":3"#, #""top_p":0"#, #""n":2"#, #""top_k":-1"#,
            #""stop":["a","b","c","d","e"]"#, #""stop":""#, #""presence_penalty":0.5"#,
        ]
        for c in cases {
            let e = apiError { _ = try ChatCompletionRequest.parse(body(#"{"messages":[{"role":"user","content":"x"}],"# + c + "}")) }
            #expect(e?.status == 400, "\(c)")
        }
        let role = apiError { _ = try ChatCompletionRequest.parse(body(#"{"messages":[{"role":"robot","content":"x"}]}"#)) }
        #expect(role?.status == 400)
        let empty = apiError { _ = try ChatCompletionRequest.parse(body(#"{"messages":[]}"#)) }
        #expect(empty?.status == 400)
    }

    @Test func completionPromptForms() throws {
        #expect(try CompletionRequest.parse(body(#"{"prompt":"abc"}"#)).prompt == .text("abc"))
        #expect(try CompletionRequest.parse(body(#"{"prompt":["abc"]}"#)).prompt == .text("abc"))
        #expect(try CompletionRequest.parse(body(#"{"prompt":[1,2,3]}"#)).prompt == .tokens([1, 2, 3]))
        #expect(apiError { _ = try CompletionRequest.parse(body(#"{"prompt":["a","b"]}"#)) }?.status == 400)
        #expect(apiError { _ = try CompletionRequest.parse(body(#"{"prompt":{"a":1}}"#)) }?.status == 400)
    }

    @Test func errorBodyIsOpenAIsShape() throws {
        let e = APIError.unknownField("foo")
        let object = try JSONSerialization.jsonObject(with: Data(e.json)) as? [String: Any]
        let inner = object?["error"] as? [String: Any]
        #expect(inner?["type"] as? String == "invalid_request_error")
        #expect(inner?["param"] as? String == "foo")
        #expect(inner?["code"] as? String == "unknown_field")
        #expect((inner?["message"] as? String)?.contains("foo") == true)
    }

    @Test func listenAddresses() throws {
        #expect(try HTTPServing.parseAddress("0.0.0.0:8080") == ("0.0.0.0", 8080))
        #expect(try HTTPServing.parseAddress(":0") == ("127.0.0.1", 0))
        #expect(throws: ServerError.self) { try HTTPServing.parseAddress("localhost") }
        #expect(throws: ServerError.self) { try HTTPServing.parseAddress("h:99999") }
    }
}
