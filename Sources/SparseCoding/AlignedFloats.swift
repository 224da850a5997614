/// Floats that start on a 64-byte boundary (a cache line, one 512-bit vector), filled once
/// when made and read-only after. The atoms in panels live here: a panel channel is 16
/// floats, and an AVX-512 load of one that straddles two cache lines (as in an `Array`,
/// whose elements start 32 bytes into a 16-byte-aligned block) costs two.
public final class AlignedFloats: @unchecked Sendable {
    /// Floats held.
    public let count: Int
    private let base: UnsafeMutablePointer<Float>

    /// Alignment of the first float, in bytes.
    public static let alignment = 64

    /// `count` floats, zeroed, then written by `fill` (its only writer).
    init(count: Int, fill: (UnsafeMutablePointer<Float>) -> Void) {
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * MemoryLayout<Float>.stride,
                                                   alignment: Self.alignment)
        base = raw.bindMemory(to: Float.self, capacity: max(1, count))
        base.initialize(repeating: 0, count: max(1, count))
        fill(base)
    }

    deinit { base.deallocate() }

    public subscript(i: Int) -> Float {
        precondition(i >= 0 && i < count, "index \(i) out of 0..<\(count)")
        return base[i]
    }

    /// The floats, for the duration of `body`.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(UnsafeBufferPointer(start: base, count: count)) }
    }

    /// The first float's address, valid while this buffer lives (the caller keeps it alive,
    /// e.g. with `withExtendedLifetime`).
    public var baseAddress: UnsafePointer<Float> { UnsafePointer(base) }

    /// A copy as an array (tests, diagnostics).
    public var array: [Float] { withUnsafeBufferPointer { Array($0) } }
}
