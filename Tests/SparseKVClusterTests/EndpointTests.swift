import Testing
@testable import SparseKVCluster

@Suite struct EndpointTests {
    @Test func parsesTheThreeTransports() throws {
        let tcp = try Endpoint(parsing: "tcp://10.0.0.7:5557")
        #expect(tcp.transport == .tcp && tcp.host == "10.0.0.7" && tcp.port == 5557 && !tcp.isWildcard)
        let name = try Endpoint(parsing: "tcp://worker-b.cluster.local:1")
        #expect(name.host == "worker-b.cluster.local" && name.port == 1)
        let v6 = try Endpoint(parsing: "tcp://[::1]:80")
        #expect(v6.host == "[::1]" && v6.port == 80)
        let any = try Endpoint(parsing: "tcp://127.0.0.1:*")
        #expect(any.port == nil && any.isWildcard)
        #expect(try Endpoint(parsing: "tcp://*:5557").isWildcard)
        let ipc = try Endpoint(parsing: "ipc:///tmp/sparsekv-a.sock")
        #expect(ipc.transport == .ipc && ipc.address == "/tmp/sparsekv-a.sock" && !ipc.isWildcard)
        #expect(try Endpoint(parsing: "inproc://pipeline").transport == .inproc)
        for s in ["tcp://10.0.0.7:5557", "tcp://*:*", "ipc:///tmp/x", "inproc://a"] {
            #expect(try Endpoint(parsing: s).description == s)
        }
    }

    @Test func refusesMalformedEndpoints() {
        let bad = [
            "", "10.0.0.7:5557", "http://h:1", "tcp://", "tcp://h", "tcp://h:0", "tcp://h:65536", "tcp://h:+5",
            "tcp://h:5x", "tcp://:5", "tcp://h h:5", "tcp://h/x:5", "ipc://", "inproc://",
            "ipc://" + String(repeating: "p", count: 108), "tcp://h:1\u{0}", "tcp://" + String(repeating: "a", count: 300) + ":1",
        ]
        for s in bad {
            #expect(throws: EndpointError.self, "\(s)") { try Endpoint(parsing: s) }
        }
    }
}
