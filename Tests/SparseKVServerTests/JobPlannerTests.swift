import Testing
@testable import SparseKVServer
import SparseKVEngine

@Suite("Requests to jobs")
struct JobPlannerTests {
    @Test func chatIsTemplatedWithSpecialTokensParsed() throws {
        let tokenizer = try ByteTokenizer.make()
        let planner = JobPlanner(tokenizer: tokenizer, contextLength: 1000, acceptsTokenPrompts: true)
        let r = try ChatCompletionRequest.parse(Array(#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":5}"#.utf8))
        let job = try planner.job(for: r)
        let text = tokenizer.applyChatTemplate(messages: [(role: "user", content: "Hi")], addGenerationPrompt: true)
        #expect(job.promptText == text)
        #expect(job.promptTokens.first == ByteTokenizer.imStart)
        #expect(job.promptTokens.filter { $0 == ByteTokenizer.imStart }.count == 2)  // user + assistant turns
        #expect(job.maxTokens == 5)
    }

    @Test func promptOverTheContextIs400AndBudgetIsClamped() throws {
        let planner = JobPlanner(tokenizer: try ByteTokenizer.make(), contextLength: 10, acceptsTokenPrompts: true)
        do {
            _ = try planner.job(for: try CompletionRequest.parse(Array(#"{"prompt":"0123456789"}"#.utf8)))
            Issue.record("a 10-token prompt fit a 10-position context")
        } catch let e as APIError {
            #expect(e.status == 400 && e.code == "context_length_exceeded")
        }
        let job = try planner.job(for: try CompletionRequest.parse(Array(#"{"prompt":"0123","max_tokens":100}"#.utf8)))
        #expect(job.maxTokens == 6)
        let open = try planner.job(for: try CompletionRequest.parse(Array(#"{"prompt":"01"}"#.utf8)))
        #expect(open.maxTokens == 8)
    }

    @Test func tokenPromptsAreCheckedAndRefusedByTextOnlyBackends() throws {
        let tokenizer = try ByteTokenizer.make()
        let local = JobPlanner(tokenizer: tokenizer, contextLength: 100, acceptsTokenPrompts: true)
        #expect(try local.job(for: try CompletionRequest.parse(Array(#"{"prompt":[72,105]}"#.utf8))).promptTokens == [72, 105])
        #expect(throws: APIError.self) { try local.job(for: try CompletionRequest.parse(Array(#"{"prompt":[99999]}"#.utf8))) }
        let cluster = JobPlanner(tokenizer: tokenizer, contextLength: 100, acceptsTokenPrompts: false)
        #expect(throws: APIError.self) { try cluster.job(for: try CompletionRequest.parse(Array(#"{"prompt":[72]}"#.utf8))) }
        #expect(throws: APIError.self) { try local.job(for: try CompletionRequest.parse(Array(#"{"prompt":""}"#.utf8))) }
    }
}
