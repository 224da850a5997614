import CShims
import Foundation

/// Software prefetch for the loop that streams most memory in a decode step: the weights of
/// the quantized products. It asks for them a few KB before it reads them, because the
/// hardware prefetcher stops at every 4 KB page of the file mapping and the reads and the
/// arithmetic then take turns. Hints only: they change no result.
enum Prefetch {
    /// `SPARSEKV_PREFETCH=0` turns every hint off (to measure what they bring).
    static let enabled = ProcessInfo.processInfo.environment["SPARSEKV_PREFETCH"] != "0"

    /// Asks for the lines of `[p, p + count)`, `count` clamped to `[0, limit - p)`.
    @inline(__always)
    static func range(_ p: UnsafeRawPointer, _ count: Int, limit: UnsafeRawPointer) {
        let n = min(count, limit - p)
        if n > 0 { sparsekv_prefetch(p, n) }
    }
}
