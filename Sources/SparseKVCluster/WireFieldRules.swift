/// Small checks that throw ``WireError`` values naming the kind and field.
struct FieldRules {
    let kind: MessageKind

    func that(_ ok: Bool, _ field: String, _ reason: @autoclosure () -> String) throws {
        guard ok else { throw WireError.invalidField(kind: kind, field: field, reason: reason()) }
    }

    func length(_ n: Int, _ field: String, max: Int) throws {
        guard n <= max else { throw WireError.lengthOverLimit(kind: kind, field: field, length: n, limit: max) }
    }

    func range<R: RangeExpression>(_ v: Int, _ r: R, _ field: String) throws where R.Bound == Int {
        try that(r.contains(v), field, "\(v) is out of range \(r)")
    }

    func layers(_ r: Range<Int>, upTo end: Int) throws {
        try that(r.lowerBound >= 0 && !r.isEmpty && r.upperBound <= end, "layers",
                 "\(r.lowerBound)..<\(r.upperBound) must be a non-empty range within 0..<\(end)")
    }

    func identifier(_ s: String, _ field: String, max: Int) throws {
        try length(s.utf8.count, field, max: max)
        try that(!s.isEmpty && s.utf8.allSatisfy(WireProtocol.isIdentifierByte), field,
                 "'\(s)' must be 1...\(max) characters of A-Z a-z 0-9 . _ -")
    }

    func printable(_ s: String, _ field: String, max: Int) throws {
        try length(s.utf8.count, field, max: max)
        try that(!s.isEmpty && s.utf8.allSatisfy { (0x21...0x7E).contains($0) }, field,
                 "'\(s)' must be 1...\(max) printable ASCII characters without spaces")
    }

    func encoding(_ s: String) throws {
        try length(s.utf8.count, "encoding", max: WireProtocol.maxEncodingLength)
        try that(!s.isEmpty && s.utf8.allSatisfy { WireProtocol.isIdentifierByte($0) || $0 == UInt8(ascii: ":") }, "encoding",
                 "'\(s)' must be a cache kind such as csr or fp16")
    }

    func hex(_ s: String, _ field: String, required: Bool) throws {
        try length(s.utf8.count, field, max: WireProtocol.maxHashLength)
        try that(!required || !s.isEmpty, field, "missing")
        try that(s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }, field,
                 "'\(s)' is not lowercase hex")
    }

    func connectable(_ e: Endpoint, _ field: String) throws {
        try length(e.description.utf8.count, field, max: WireProtocol.maxEndpointLength)
        try that(!e.isWildcard, field, "'\(e)' is a bind-only wildcard; a peer must be able to connect to it")
    }

    /// A per-worker KV list: at most maxWorkers entries, each naming a worker id.
    func workerKV(_ list: [WorkerKVBytes]) throws {
        try length(list.count, "worker count", max: WireProtocol.maxWorkers)
        for e in list { try identifier(e.worker, "worker id", max: WireProtocol.maxWorkerIDLength) }
    }
}
