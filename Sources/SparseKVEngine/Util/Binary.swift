/// Little-endian byte writer for SparseKV's binary formats (KV transfer payloads, wire
/// messages). Appends to a growing array.
public struct BinaryWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func write<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func write(_ v: Float) { write(v.bitPattern) }

    /// u32 length, then UTF-8 bytes.
    public mutating func write(_ s: String) {
        let u = Array(s.utf8)
        write(UInt32(u.count))
        bytes.append(contentsOf: u)
    }

    public mutating func write(raw: UnsafeRawBufferPointer) { bytes.append(contentsOf: raw) }

    public mutating func write<T>(array: [T]) where T: BitwiseCopyable {
        array.withUnsafeBytes { bytes.append(contentsOf: $0) }
    }
}

/// Bounds-checked little-endian reader; every read that would pass the end throws.
public struct BinaryReader {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var position = 0

    /// Error raised on a short or inconsistent buffer; `what` names the field.
    public struct OutOfBounds: Error, Sendable { public let what: String }

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - position }

    public mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let n = MemoryLayout<T>.size
        guard n <= remaining, let base = bytes.baseAddress else { throw OutOfBounds(what: what) }
        defer { position += n }
        return T(littleEndian: (base + position).loadUnaligned(as: T.self))
    }

    public mutating func readFloat(_ what: String) throws -> Float {
        Float(bitPattern: try read(UInt32.self, what))
    }

    public mutating func readString(_ what: String, maxLength: Int = 1 << 16) throws -> String {
        let n = Int(try read(UInt32.self, "length of \(what)"))
        guard n <= maxLength else { throw OutOfBounds(what: "\(what) (length \(n) over \(maxLength))") }
        let raw = try readRaw(n, what)
        return String(decoding: raw, as: UTF8.self)
    }

    public mutating func readRaw(_ n: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining, let base = bytes.baseAddress else { throw OutOfBounds(what: what) }
        defer { position += n }
        return UnsafeRawBufferPointer(start: base + position, count: n)
    }

    /// `count` elements of T copied out.
    public mutating func readArray<T: BitwiseCopyable>(_: T.Type, count: Int, _ what: String) throws -> [T] {
        let (n, o) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
        guard !o else { throw OutOfBounds(what: what) }
        let raw = try readRaw(n, what)
        return [T](unsafeUninitializedCapacity: count) { buf, c in
            UnsafeMutableRawBufferPointer(buf).copyMemory(from: raw)
            c = count
        }
    }
}
