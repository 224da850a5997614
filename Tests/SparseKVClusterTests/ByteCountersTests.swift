import Foundation
import Testing
@testable import SparseKVCluster

@Suite struct ByteCountersTests {
    @Test func countsByPeerAndCategory() {
        let c = ByteCounters()
        c.recordSent(bytes: 100, category: .kv, peer: "worker-b")
        c.recordSent(bytes: 50, category: .kv, peer: "worker-b")
        c.recordReceived(bytes: 7, category: .control, peer: "worker-b")
        c.recordReceived(bytes: 30, category: .activations, peer: "coordinator")
        c.recordReceived(bytes: 3, category: .control, peer: "coordinator", rejected: true)
        let s = c.snapshot()
        #expect(s.byPeer["worker-b"]?.kv == TrafficCount(sentBytes: 150, sentMessages: 2))
        #expect(s.byPeer["worker-b"]?.control == TrafficCount(receivedBytes: 7, receivedMessages: 1))
        #expect(s.byCategory.control == TrafficCount(receivedBytes: 10, receivedMessages: 2))
        #expect(s.total == TrafficCount(sentBytes: 150, sentMessages: 2, receivedBytes: 40, receivedMessages: 3))
        #expect(s.rejected == TrafficCount(receivedBytes: 3, receivedMessages: 1))
        c.reset()
        #expect(c.snapshot() == TrafficSnapshot())
    }

    @Test func threadSafe() {
        let c = ByteCounters()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            for j in 0..<2000 {
                let category = TrafficCategory.allCases[j % 4]
                c.recordSent(bytes: 3, category: category, peer: "p\(i % 2)")
                c.recordReceived(bytes: 5, category: category, peer: "p\(i % 2)")
            }
        }
        let s = c.snapshot()
        #expect(s.total == TrafficCount(sentBytes: 48_000, sentMessages: 16_000, receivedBytes: 80_000, receivedMessages: 16_000))
        #expect(s.byCategory.kv.sentMessages == 4000)
        #expect(s.byPeer.count == 2)
    }

    @Test func snapshotIsCodable() throws {
        let s = Samples.traffic()
        let json = try JSONEncoder().encode(s)
        #expect(try JSONDecoder().decode(TrafficSnapshot.self, from: json) == s)
        let text = String(decoding: json, as: UTF8.self)
        #expect(text.contains("\"coordinator\"") && text.contains("\"sentBytes\""))
    }
}
