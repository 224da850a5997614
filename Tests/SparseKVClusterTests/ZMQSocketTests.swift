import CZMQ
import Foundation
import Testing
@testable import SparseKVCluster

/// Real libzmq sockets over loopback tcp and inproc.
@Suite struct ZMQSocketTests {
    static let wait: Duration = .seconds(5)

    func options(routingID: String? = nil, maxMessageBytes: Int = WireProtocol.maxMessageBytes) -> ZMQSocketOptions {
        var o = ZMQSocketOptions()
        o.linger = .zero
        o.routingID = routingID.map { Array($0.utf8) }
        o.maxMessageBytes = maxMessageBytes
        return o
    }

    @Test func routerDealerOverLoopbackTCP() throws {
        let ctx = try ZMQContext()
        let router = try ZMQSocket(context: ctx, kind: .router, options: options())
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        let parsed = try Endpoint(parsing: endpoint)
        #expect(parsed.host == "127.0.0.1" && (parsed.port ?? 0) > 0, "\(endpoint)")
        let dealer = try ZMQSocket(context: ctx, kind: .dealer, options: options(routingID: "worker-a"))
        try dealer.connect(endpoint)

        let request: [[UInt8]] = [[1, 2, 3], [], Array(repeating: 9, count: 70_000)]
        try dealer.send(request, timeout: Self.wait)
        let got = try #require(try router.receive(timeout: Self.wait))
        #expect(got.count == 4)
        #expect(got[0] == Array("worker-a".utf8))
        #expect(Array(got.dropFirst()) == request)

        try router.send([got[0], Array("ok".utf8)], timeout: Self.wait)
        #expect(try dealer.receive(timeout: Self.wait) == [Array("ok".utf8)])
    }

    @Test func pushPullInprocAndTCP() throws {
        let ctx = try ZMQContext()
        for endpoint in ["inproc://push-pull-test", "tcp://127.0.0.1:*"] {
            let pull = try ZMQSocket(context: ctx, kind: .pull, options: options())
            let bound = try pull.bind(endpoint)
            let push = try ZMQSocket(context: ctx, kind: .push, options: options())
            try push.connect(bound)
            for i in 0..<20 { try push.send([[UInt8(i)], Array(repeating: UInt8(i), count: i * 100)], timeout: Self.wait) }
            for i in 0..<20 {
                let frames = try #require(try pull.receive(timeout: Self.wait))
                #expect(frames == [[UInt8(i)], Array(repeating: UInt8(i), count: i * 100)], "\(endpoint) #\(i)")
            }
        }
    }

    @Test func receiveTimeoutReturnsNil() throws {
        let ctx = try ZMQContext()
        let pull = try ZMQSocket(context: ctx, kind: .pull, options: options())
        try pull.bind("inproc://nothing-arrives")
        #expect(try pull.receive(timeout: .milliseconds(30)) == nil)
        #expect(try pull.receive(timeout: .zero) == nil)
    }

    @Test func errorsCarryLibzmqText() throws {
        let ctx = try ZMQContext()
        let s = try ZMQSocket(context: ctx, kind: .pull, options: options())
        do {
            try s.bind("bogus://x")
            Issue.record("bound a bogus transport")
        } catch ZMQError.failed(let op, let detail, let code, let reason) {
            #expect(op == "zmq_bind" && detail == "bogus://x" && code == EPROTONOSUPPORT)
            #expect(reason == String(cString: zmq_strerror(EPROTONOSUPPORT)) && !reason.isEmpty)
        }
        let first = try s.bind("tcp://127.0.0.1:*")
        #expect(throws: ZMQError.self) { try s.bind(first) }  // address in use
        #expect(throws: ZMQError.self) { try ZMQSocket(context: ctx, kind: .dealer, options: options(routingID: "")) }
        s.close()
        #expect(s.isClosed)
        #expect(throws: ZMQError.closed) { try s.receive(timeout: .zero) }
    }

    @Test func routerRefusesUnknownPeers() throws {
        let ctx = try ZMQContext()
        let router = try ZMQSocket(context: ctx, kind: .router, options: options())
        try router.bind("inproc://mandatory")
        #expect(throws: ZMQError.hostUnreachable(peer: "nobody")) { try router.send([Array("nobody".utf8), [1]], timeout: Self.wait) }
    }

    @Test func sendTimesOutWithoutPeer() throws {
        let ctx = try ZMQContext()
        let dealer = try ZMQSocket(context: ctx, kind: .dealer, options: options())
        #expect(throws: ZMQError.timedOut(operation: "send on DEALER")) { try dealer.send([[1]], timeout: .milliseconds(20)) }
    }

    @Test func oversizedFramesAreDroppedByLibzmq() throws {
        let ctx = try ZMQContext()
        let pull = try ZMQSocket(context: ctx, kind: .pull, options: options(maxMessageBytes: 1000))
        let endpoint = try pull.bind("tcp://127.0.0.1:*")
        let push = try ZMQSocket(context: ctx, kind: .push, options: options())
        try push.connect(endpoint)
        try push.send([Array(repeating: 1, count: 5000)], timeout: Self.wait)
        #expect(try pull.receive(timeout: .milliseconds(200)) == nil)
    }

    @Test func contextShutdownUnblocksAReceive() throws {
        let ctx = try ZMQContext()
        let done = DispatchSemaphore(value: 0)
        let outcome = Outcome()
        let thread = Thread {
            do {
                let s = try ZMQSocket(context: ctx, kind: .pull, options: ZMQSocketOptions())
                try s.bind("inproc://blocked")
                _ = try s.receive()  // no timeout: only the shutdown ends it
                outcome.set("returned")
            } catch {
                outcome.set("\(error)")
            }
            done.signal()
        }
        thread.start()
        Thread.sleep(forTimeInterval: 0.05)
        ctx.shutdown()
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(outcome.get() == "\(ZMQError.contextTerminated)")
    }
}

/// A string set by one thread and read by another.
final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var value = ""
    func set(_ v: String) { lock.withLock { value = v } }
    func get() -> String { lock.withLock { value } }
}
