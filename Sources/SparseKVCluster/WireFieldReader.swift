import SparseKVEngine

/// Reads body fields; every read is bounded by the body and by the field's limit, and
/// failures become ``WireError`` values naming the field.
struct FieldReader {
    let kind: MessageKind
    var r: BinaryReader

    init(kind: MessageKind, bytes: UnsafeRawBufferPointer) {
        self.kind = kind
        r = BinaryReader(bytes)
    }

    var remaining: Int { r.remaining }

    mutating func fixed<T: FixedWidthInteger>(_: T.Type, _ field: String) throws -> T {
        do { return try r.read(T.self, field) } catch { throw WireError.truncated(kind: kind, field: field) }
    }

    mutating func u8(_ field: String) throws -> UInt8 { try fixed(UInt8.self, field) }
    mutating func u16(_ field: String) throws -> UInt16 { try fixed(UInt16.self, field) }
    mutating func u64(_ field: String) throws -> UInt64 { try fixed(UInt64.self, field) }
    mutating func int(_ field: String) throws -> Int { Int(try fixed(UInt32.self, field)) }

    /// A u32 that sizes later fields: checked against its limit before anything is read.
    mutating func count(_ field: String, max: Int, min: Int = 1) throws -> Int {
        let n = try int(field)
        guard n <= max else { throw WireError.lengthOverLimit(kind: kind, field: field, length: n, limit: max) }
        guard n >= min else { throw WireError.invalidField(kind: kind, field: field, reason: "\(n), at least \(min) needed") }
        return n
    }

    /// u32 length, then that many bytes; the length is checked against `max` and then
    /// against the bytes left, so a huge length never allocates.
    mutating func bytes(_ field: String, max: Int) throws -> UnsafeRawBufferPointer {
        let n = try int("length of \(field)")
        guard n <= max else { throw WireError.lengthOverLimit(kind: kind, field: field, length: n, limit: max) }
        do { return try r.readRaw(n, field) } catch { throw WireError.truncated(kind: kind, field: field) }
    }

    mutating func string(_ field: String, max: Int) throws -> String {
        let raw = try bytes(field, max: max)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw WireError.invalidField(kind: kind, field: field, reason: "not valid UTF-8")
        }
        return s
    }

    mutating func blob(_ field: String, max: Int) throws -> [UInt8] { Array(try bytes(field, max: max)) }

    mutating func endpoint(_ field: String) throws -> Endpoint {
        let s = try string(field, max: WireProtocol.maxEndpointLength)
        do { return try Endpoint(parsing: s) } catch {
            throw WireError.invalidField(kind: kind, field: field, reason: error.localizedDescription)
        }
    }

    mutating func layers() throws -> Range<Int> {
        let lo = try int("first layer"), hi = try int("end layer")
        // Checked here, before a Range exists: lo > hi would trap.
        guard lo < hi else { throw WireError.invalidField(kind: kind, field: "layers", reason: "\(lo)..<\(hi) is empty") }
        return lo..<hi
    }

    mutating func floats(_ field: String, count: Int) throws -> [Float] {
        do { return try r.readArray(Float.self, count: count, field) } catch {
            throw WireError.truncated(kind: kind, field: field)
        }
    }

    /// A u8 that must be 0 or 1.
    mutating func flag(_ field: String) throws -> Bool {
        switch try u8(field) {
        case 0: return false
        case 1: return true
        case let v: throw WireError.invalidField(kind: kind, field: field, reason: "\(v), expected 0 or 1")
        }
    }

    /// A u8 naming a ``KVTransferMode``.
    mutating func transferMode() throws -> KVTransferMode {
        let v = try u8("mode")
        guard let mode = KVTransferMode(rawValue: v) else {
            throw WireError.invalidField(kind: kind, field: "mode", reason: "\(v), expected 0 (install), 1 (measure) or 2 (stream)")
        }
        return mode
    }

    /// u32 count (min...maxContext), then that many non-negative i32 token ids.
    mutating func tokens(_ field: String, min: Int) throws -> [Int32] {
        let n = try count("\(field) count", max: WireProtocol.maxContext, min: min)
        guard n * 4 <= remaining else { throw WireError.truncated(kind: kind, field: field) }
        var out: [Int32] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let t = Int32(bitPattern: try fixed(UInt32.self, field))
            guard t >= 0 else { throw WireError.invalidField(kind: kind, field: field, reason: "negative token id \(t)") }
            out.append(t)
        }
        return out
    }

    mutating func traffic(_ field: String) throws -> TrafficCount {
        TrafficCount(sentBytes: try u64("\(field) sent bytes"), sentMessages: try u64("\(field) sent messages"),
                     receivedBytes: try u64("\(field) received bytes"), receivedMessages: try u64("\(field) received messages"))
    }

    /// A per-worker KV list: count u32 (0...maxWorkers), then worker id str and bytes u64 each.
    mutating func workerKV() throws -> [WorkerKVBytes] {
        let n = try count("worker count", max: WireProtocol.maxWorkers, min: 0)
        var out: [WorkerKVBytes] = []
        for i in 0..<n {
            out.append(WorkerKVBytes(worker: try string("worker \(i) id", max: WireProtocol.maxWorkerIDLength),
                                     bytes: try u64("worker \(i) kv bytes")))
        }
        return out
    }
}
