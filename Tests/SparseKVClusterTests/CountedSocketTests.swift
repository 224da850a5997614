import Foundation
import Testing
@testable import SparseKVCluster

/// Byte accounting and refusal of malformed messages over real sockets.
@Suite struct CountedSocketTests {
    static let wait: Duration = .seconds(5)

    func options(routingID: String? = nil) -> ZMQSocketOptions {
        var o = ZMQSocketOptions()
        o.linger = .zero
        o.routingID = routingID.map { Array($0.utf8) }
        return o
    }

    /// Coordinator ROUTER and worker DEALER over loopback tcp, each with its own counters.
    func pair(_ ctx: ZMQContext) throws -> (coordinator: CountedSocket, worker: CountedSocket) {
        let coordinator = try CountedSocket(context: ctx, kind: .router, counters: ByteCounters(), options: options())
        let endpoint = try coordinator.bind("tcp://127.0.0.1:*")
        let worker = try CountedSocket(context: ctx, kind: .dealer, counters: ByteCounters(), peerLabel: "coordinator",
                                       options: options(routingID: "worker-a"))
        try worker.connect(endpoint)
        return (coordinator, worker)
    }

    @Test func sentCountersEqualReceivedCounters() throws {
        let ctx = try ZMQContext()
        let (coordinator, worker) = try pair(ctx)
        let samples = try Samples.all()
        let fromWorker = samples.filter { [.register, .shardReady, .dictionaryAck, .activations, .kvTransfer, .kvTransferAck,
                                           .statsReply, .error, .ping].contains($0.kind) }
        let fromCoordinator = samples.filter { [.registerAck, .shardAssignment, .dictionary, .activations, .kvRequest,
                                                .dropSession, .statsRequest, .shutdown, .pong].contains($0.kind) }
        var expectedWorkerBytes: [TrafficCategory: UInt64] = [:]
        for m in fromWorker + fromWorker {  // twice, to count more than one of each
            let n = try worker.send(m, timeout: Self.wait)
            #expect(n == (try m.encode().count))
            expectedWorkerBytes[m.category, default: 0] += UInt64(n)
            let r = try #require(try coordinator.receive(timeout: Self.wait))
            #expect(try r.message() == m)
            #expect(r.peer == "worker-a" && r.wireBytes == n && r.routingID == Array("worker-a".utf8))
        }
        let routingID = Array("worker-a".utf8)
        var expectedCoordinatorBytes: [TrafficCategory: UInt64] = [:]
        for m in fromCoordinator {
            expectedCoordinatorBytes[m.category, default: 0] += UInt64(try coordinator.send(m, to: routingID, timeout: Self.wait))
            let r = try #require(try worker.receive(timeout: Self.wait))
            #expect(try r.message() == m)
            #expect(r.peer == "coordinator" && r.routingID == nil)
        }

        let w = worker.counters.snapshot(), c = coordinator.counters.snapshot()
        #expect(Array(w.byPeer.keys) == ["coordinator"] && Array(c.byPeer.keys) == ["worker-a"])
        for category in TrafficCategory.allCases {
            let ws = w.byCategory[category], cs = c.byCategory[category]
            #expect(ws.sentBytes == cs.receivedBytes && ws.sentMessages == cs.receivedMessages, "\(category)")
            #expect(cs.sentBytes == ws.receivedBytes && cs.sentMessages == ws.receivedMessages, "\(category)")
            #expect(ws.sentBytes == expectedWorkerBytes[category, default: 0], "\(category)")
            #expect(cs.sentBytes == expectedCoordinatorBytes[category, default: 0], "\(category)")
        }
        #expect(w.total.sentMessages == UInt64(2 * fromWorker.count) && c.total.receivedMessages == w.total.sentMessages)
        #expect(w.total.sentBytes == c.total.receivedBytes && c.total.sentBytes == w.total.receivedBytes)
        #expect(w.byCategory.kv.sentMessages == 6 && w.byCategory.activations.sentMessages == 4)
        #expect(c.byCategory.dictionary.sentMessages == 1)
        #expect(w.rejected == TrafficCount() && c.rejected == TrafficCount())
    }

    @Test func pushPullCountsToo() throws {
        let ctx = try ZMQContext()
        let pull = try CountedSocket(context: ctx, kind: .pull, counters: ByteCounters(), peerLabel: "worker-a", options: options())
        try pull.bind("inproc://counted-pipeline")
        let push = try CountedSocket(context: ctx, kind: .push, counters: ByteCounters(), peerLabel: "worker-b", options: options())
        try push.connect("inproc://counted-pipeline")
        let activations = try Samples.all().filter { $0.kind == .activations }
        var total = 0
        for m in activations { total += try push.send(m, timeout: Self.wait) }
        for m in activations { #expect(try pull.receive(timeout: Self.wait)?.message() == m) }
        #expect(push.counters.snapshot().byPeer["worker-b"]?.activations.sentBytes == UInt64(total))
        #expect(pull.counters.snapshot().byPeer["worker-a"]?.activations.receivedBytes == UInt64(total))
    }

    /// `takeResult` hands over the decoded message and leaves the envelope (sender, size,
    /// header) with a result that says the message was taken.
    @Test func takingTheResultLeavesTheEnvelope() throws {
        let ctx = try ZMQContext()
        let (coordinator, worker) = try pair(ctx)
        let m = try #require(try Samples.all().first { $0.kind == .activations })
        let sent = try worker.send(m, timeout: Self.wait)
        var received = try #require(try coordinator.receive(timeout: Self.wait))
        #expect(try received.takeResult().get() == m)
        #expect(throws: WireError.self) { try received.message() }
        #expect(received.peer == "worker-a" && received.wireBytes == sent && received.header?.kind == .activations)
        #expect(received.routingID == Array("worker-a".utf8))
    }

    @Test func routingIDRules() throws {
        let ctx = try ZMQContext()
        let (coordinator, worker) = try pair(ctx)
        #expect(throws: ZMQError.self) { try coordinator.send(WireMessage(.statsRequest)) }
        #expect(throws: ZMQError.self) { try worker.send(WireMessage(.statsRequest), to: [1, 2]) }
        // An invalid message is refused before sending and not counted.
        #expect(throws: WireError.self) { try worker.send(WireMessage(.ping(nonce: 1), sessionID: 3)) }
        #expect(worker.counters.snapshot() == TrafficSnapshot())
    }

    /// A serving loop refuses malformed messages one by one and keeps serving.
    @Test func malformedMessagesDoNotStopTheLoop() throws {
        let ctx = try ZMQContext()
        let server = try CountedSocket(context: ctx, kind: .router, counters: ByteCounters(), options: options())
        let endpoint = try server.bind("tcp://127.0.0.1:*")
        let client = try ZMQSocket(context: ctx, kind: .dealer, options: options(routingID: "evil"))
        try client.connect(endpoint)

        var wrongVersion = try WireMessage(.ping(nonce: 1), requestID: 41).encode()
        wrongVersion[4] = 9
        var badFloat = try #require(try Samples.all().first { $0.kind == .activations }).encode()
        badFloat.replaceSubrange(28 + 24..<28 + 28, with: withUnsafeBytes(of: Float.nan.bitPattern.littleEndian, Array.init))
        let garbage: [[[UInt8]]] = [
            [Array("GET / HTTP/1.1\r\n\r\n".utf8)],
            [wrongVersion],
            [[1, 2], [3]],
            [badFloat],
            [[]],
        ]
        for frames in garbage { try client.send(frames, timeout: Self.wait) }
        try client.send([try WireMessage(.ping(nonce: 77), requestID: 42).encode()], timeout: Self.wait)

        // The loop: reply to everything, an error for what did not decode.
        var errors: [WireError] = []
        var served = 0
        while served < garbage.count + 1, let r = try server.receive(timeout: Self.wait) {
            served += 1
            let reply: WireBody
            switch r.result {
            case .success(let m):
                guard case .ping(let nonce) = m.body else { throw WireError.unknownKind(0) }
                reply = .pong(nonce: nonce)
            case .failure(let e):
                errors.append(e)
                reply = .error(ErrorBody(code: .malformedMessage, message: e.localizedDescription))
            }
            let sender = try #require(r.routingID)
            try server.send(WireMessage(reply, requestID: r.header?.requestID ?? 0), to: sender, timeout: Self.wait)
        }
        #expect(served == garbage.count + 1)
        #expect(errors.count == garbage.count)
        #expect(errors[0] == .badMagic(0x2054_4547))  // "GET "
        #expect(errors[1] == .unsupportedVersion(received: 9, supported: 2))
        #expect(errors[2] == .unexpectedFrameCount(received: 3, expected: 2))
        #expect(errors[3] == .nonFiniteValue(kind: .activations, field: "hidden states", index: 0))
        #expect(errors[4] == .truncated(kind: nil, field: "magic"))

        for _ in garbage {
            let frames = try #require(try client.receive(timeout: Self.wait))
            guard case .error(let e) = try WireMessage.decode(frames[0]).body else {
                Issue.record("expected an error reply")
                continue
            }
            #expect(e.code == .malformedMessage && !e.message.isEmpty)
        }
        let pong = try WireMessage.decode(try #require(try client.receive(timeout: Self.wait))[0])
        #expect(pong == WireMessage(.pong(nonce: 77), requestID: 42))

        let s = server.counters.snapshot()
        let garbageBytes = garbage.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count } }
        #expect(s.rejected == TrafficCount(receivedBytes: UInt64(garbageBytes), receivedMessages: UInt64(garbage.count)))
        #expect(s.byPeer["evil"]?.activations.receivedBytes == UInt64(badFloat.count))  // category from its header
        #expect(s.total.receivedMessages == UInt64(garbage.count + 1))
    }
}
