/// Values that start on a 64-byte boundary (a cache line, one 512-bit vector), filled once
/// when made and read-only after. An AVX-512 load of 64 bytes that straddles two cache lines
/// (as in an `Array`, whose elements start 32 bytes into a 16-byte-aligned block) costs two:
/// the atoms in panels live here, and so do the CSR keys' fixed-point atoms and RoPE table,
/// where the straddling loads made the key kernel take twice as long.
public final class AlignedBuffer<Element: BitwiseCopyable>: @unchecked Sendable {
    /// Values held.
    public let count: Int
    private let base: UnsafeMutablePointer<Element>

    /// Alignment of the first value, in bytes.
    public static var alignment: Int { 64 }

    /// `count` values, zeroed, then written by `fill` (its only writer).
    public init(count: Int, fill: (UnsafeMutablePointer<Element>) -> Void) {
        self.count = count
        let bytes = max(1, count) * MemoryLayout<Element>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: Self.alignment)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        base = raw.bindMemory(to: Element.self, capacity: max(1, count))
        fill(base)
    }

    /// A copy of `values`.
    public convenience init(_ values: [Element]) {
        self.init(count: values.count) { p in
            values.withUnsafeBufferPointer { if let b = $0.baseAddress { p.update(from: b, count: values.count) } }
        }
    }

    deinit { base.deallocate() }

    public subscript(i: Int) -> Element {
        precondition(i >= 0 && i < count, "index \(i) out of 0..<\(count)")
        return base[i]
    }

    /// The values, for the duration of `body`.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Element>) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(UnsafeBufferPointer(start: base, count: count)) }
    }

    /// The first value's address, valid while this buffer lives (the caller keeps it alive,
    /// e.g. with `withExtendedLifetime`).
    public var baseAddress: UnsafePointer<Element> { UnsafePointer(base) }

    /// A copy as an array (tests, diagnostics).
    public var array: [Element] { withUnsafeBufferPointer { Array($0) } }
}

/// The atoms in panels (``SparseDictionary/panels()``).
public typealias AlignedFloats = AlignedBuffer<Float>
