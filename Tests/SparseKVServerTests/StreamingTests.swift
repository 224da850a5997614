import Foundation
import Testing
@testable import SparseKVServer
import SparseKVEngine
import SparseKVCluster

private func object(_ bytes: [UInt8]) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
}

@Suite("Text assembly, SSE framing, reply shapes")
struct StreamingTests {
    @Test func stopSequenceCutsTheTextAndNothingComesAfter() throws {
        var a = TextAssembler(tokenizer: try ByteTokenizer.make(), stops: ["END"])
        var out = ""
        for id in ByteTokenizer.ids("Hello ENough END world") { out += a.feed(id) }
        out += a.finish()
        #expect(out == "Hello ENough ")
        #expect(a.stopped && a.text == out)
    }

    @Test func possibleStopPrefixIsHeldUntilDecided() throws {
        var a = TextAssembler(tokenizer: try ByteTokenizer.make(), stops: ["END"])
        #expect(a.feed(ByteTokenizer.ids("x")[0]) == "x")
        #expect(a.feed(ByteTokenizer.ids("E")[0]) == "")
        #expect(a.feed(ByteTokenizer.ids("N")[0]) == "")
        #expect(a.feed(ByteTokenizer.ids("Z")[0]) == "ENZ")
        #expect(a.feed(ByteTokenizer.ids("E")[0]) == "")
        #expect(a.finish() == "E")  // the end of generation releases a held prefix
        #expect(!a.stopped)
    }

    @Test func halfCharactersWaitForTheirLastByte() throws {
        var a = TextAssembler(tokenizer: try ByteTokenizer.make(), stops: [])
        let bytes = ByteTokenizer.ids("é!")  // C3 A9 21
        #expect(a.feed(bytes[0]) == "")
        #expect(a.feed(bytes[1]) == "é")
        #expect(a.feed(bytes[2]) == "!")
        // Control tokens are not rendered.
        #expect(a.feed(ByteTokenizer.imEnd) == "")
    }

    @Test func heldSuffixIsTheLongestStopPrefix() {
        #expect(TextAssembler.heldSuffixLength("abc", stops: ["cd", "bcx"]) == 2)
        #expect(TextAssembler.heldSuffixLength("abc", stops: ["x"]) == 0)
        #expect(TextAssembler.heldSuffixLength("", stops: ["abc"]) == 0)
        #expect(TextAssembler.heldSuffixLength("ab", stops: ["abc"]) == 2)
    }

    @Test func serverSentEventFraming() throws {
        #expect(ServerSentEvents.event(Array(#"{"a":1}"#.utf8)) == Array("data: {\"a\":1}\n\n".utf8))
        #expect(String(decoding: ServerSentEvents.done, as: UTF8.self) == "data: [DONE]\n\n")
        let stream = "data: {\"a\":1}\n\n: a comment\n\ndata: [DONE]\n\n"
        #expect(ServerSentEvents.dataPayloads(stream) == ["{\"a\":1}", "[DONE]"])
    }

    @Test func chatChunksFollowOpenAIsShape() throws {
        let f = ReplyFormat(kind: .chat, id: "chatcmpl-1", created: 5, model: "m")
        let first = try object(f.chunk(piece: "", first: true))
        #expect(first["object"] as? String == "chat.completion.chunk")
        let choice = try #require((first["choices"] as? [[String: Any]])?.first)
        #expect((choice["delta"] as? [String: Any])?["role"] as? String == "assistant")
        #expect(choice["finish_reason"] is NSNull)
        let summary = GenerationSummary(stopReason: "length", promptTokens: 4, completionTokens: 2, prefillSeconds: 0.5,
                                        decodeSeconds: 0.25, kvCache: "fp16", kvCacheBytes: 900, workers: 3,
                                        activationBytesSent: 10, activationBytesReceived: 20,
                                        kvBytesByWorker: [WorkerKVBytes(worker: "w1", bytes: 500), WorkerKVBytes(worker: "w2", bytes: 400)])
        let last = try object(f.chunk(piece: nil, finishReason: "length", summary: summary))
        let lastChoice = try #require((last["choices"] as? [[String: Any]])?.first)
        #expect(lastChoice["finish_reason"] as? String == "length")
        #expect((lastChoice["delta"] as? [String: Any])?.isEmpty == true)
        #expect((last["usage"] as? [String: Any])?["total_tokens"] as? Int == 6)
        let ext = try #require(last["sparsekv"] as? [String: Any])
        #expect(ext["kv_cache"] as? String == "fp16" && ext["kv_cache_bytes_per_worker"] as? [String: Int] == ["w1": 500, "w2": 400])
        #expect(ext["activation_bytes_received"] as? Int == 20)
        let usage = try object(f.usageChunk(summary))
        #expect((usage["choices"] as? [Any])?.isEmpty == true)
    }

    @Test func completionRepliesCarryText() throws {
        let f = ReplyFormat(kind: .text, id: "cmpl-1", created: 5, model: "m")
        let summary = GenerationSummary(stopReason: "eos", promptTokens: 1, completionTokens: 1, prefillSeconds: 0, decodeSeconds: 0,
                                        kvCache: "fp32", kvCacheBytes: 0)
        let reply = try object(f.reply(text: "hi", summary: summary, finishReason: "stop"))
        #expect(reply["object"] as? String == "text_completion")
        #expect((reply["choices"] as? [[String: Any]])?.first?["text"] as? String == "hi")
        #expect(ReplyFormat.finishReason(summary, stopSequenceHit: false) == "stop")
        var context = summary
        context.stopReason = "context"
        #expect(ReplyFormat.finishReason(context, stopSequenceHit: false) == "length")
        #expect(ReplyFormat.finishReason(context, stopSequenceHit: true) == "stop")
    }
}
