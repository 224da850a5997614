import Foundation

/// A static symbol distribution for ``RANSCoder``: every symbol's frequency out of
/// 2^``scaleBits``, each at least 1 so that any symbol can be coded.
///
/// Built from counts observed on calibration data (``init(counts:)``), or read back from
/// stored frequencies (``init(frequencies:)``), which must already be normalised.
public struct FrequencyTable: Sendable, Equatable {
    /// Frequencies sum to 2^scaleBits.
    public static let scaleBits = 16
    public static let total = 1 << scaleBits

    /// (symbols) frequency of each symbol, >= 1, summing to ``total``.
    public let frequencies: [UInt32]
    /// (symbols + 1) cumulative frequencies: starts[s] ..< starts[s + 1] are s's slots.
    public let starts: [UInt32]

    public var symbolCount: Int { frequencies.count }

    /// Normalises observed counts: each symbol gets a frequency proportional to its count,
    /// at least 1, the rounding error taken from (or given to) the most frequent symbols.
    ///
    /// - Throws: `EntropyCodingError.badTable` for no symbols or more than 2^scaleBits.
    public init(counts: [Int]) throws {
        let n = counts.count
        guard n >= 1, n <= Self.total else { throw EntropyCodingError.badTable("\(n) symbols (1...\(Self.total) allowed)") }
        let sum = counts.reduce(0) { $0 + max(0, $1) }
        let spare = Double(Self.total - n)  // slots beyond the minimum of 1 per symbol
        var f = counts.map { c -> Int in 1 + (sum > 0 ? Int((Double(max(0, c)) * spare / Double(sum)).rounded(.down)) : 0) }
        var left = Self.total - f.reduce(0, +)
        // Hand out (or, never needed with rounding down, take back) the remainder by count.
        let order = counts.indices.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
        var k = 0
        while left > 0 {
            f[order[k % n]] += 1
            left -= 1
            k += 1
        }
        try self.init(frequencies: f.map { UInt32($0) })
    }

    /// Stored, already normalised frequencies.
    ///
    /// - Throws: `EntropyCodingError.badTable` when a frequency is 0 or they do not sum to 2^scaleBits.
    public init(frequencies: [UInt32]) throws {
        guard !frequencies.isEmpty, frequencies.count <= Self.total else {
            throw EntropyCodingError.badTable("\(frequencies.count) symbols (1...\(Self.total) allowed)")
        }
        guard frequencies.allSatisfy({ $0 >= 1 }) else { throw EntropyCodingError.badTable("a symbol has frequency 0") }
        var starts = [UInt32](repeating: 0, count: frequencies.count + 1)
        var acc: UInt64 = 0
        for (i, f) in frequencies.enumerated() {
            starts[i] = UInt32(truncatingIfNeeded: acc)
            acc += UInt64(f)
        }
        guard acc == UInt64(Self.total) else {
            throw EntropyCodingError.badTable("frequencies sum to \(acc), not \(Self.total)")
        }
        starts[frequencies.count] = UInt32(acc)
        self.frequencies = frequencies
        self.starts = starts
    }

    /// The symbol whose slots contain `slot` (0 ..< total), by binary search.
    @inline(__always)
    public func symbol(forSlot slot: UInt32) -> Int {
        var lo = 0, hi = frequencies.count  // starts[lo] <= slot < starts[hi]
        while hi - lo > 1 {
            let mid = (lo + hi) >> 1
            if starts[mid] <= slot { lo = mid } else { hi = mid }
        }
        return lo
    }

    /// Bits to code symbol `s` ideally: -log2(f_s / total).
    public func cost(_ s: Int) -> Double {
        Double(Self.scaleBits) - log2(Double(frequencies[s]))
    }

    /// Entropy of the table's own distribution, bits per symbol.
    public var entropyBits: Double {
        frequencies.reduce(0.0) { acc, f in
            let p = Double(f) / Double(Self.total)
            return acc - p * log2(p)
        }
    }
}
