import Foundation
import SparseCoding

/// What every CSR cache of one model shares: the offline dictionary, the settings, an
/// encoder per dictionary group, and RoPE tables. Made once per process (per `--kv`
/// setting); caches are made from it per session.
public final class CSRCodec: @unchecked Sendable {
    public let dictionary: CSRDictionary
    public let settings: CSRSettings
    /// Per key group: MP encoder over the offline atoms.
    let keyEncoders: [MatchingPursuitEncoder]
    /// Per value group.
    let valueEncoders: [MatchingPursuitEncoder]

    private let lock = NSLock()
    private var ropeTables: [Int: [Float]] = [:]

    /// - Throws: `CSRError.badSettings` when a sparsity exceeds what the encoder supports,
    ///   or errors of building the encoders (Gram matrix too large).
    public init(dictionary: CSRDictionary, settings: CSRSettings) throws {
        self.dictionary = dictionary
        self.settings = settings
        func encoders(_ part: CSRDictionary.Part, _ s: Int) throws -> [MatchingPursuitEncoder] {
            try part.groups.map {
                try MatchingPursuitEncoder(dictionary: $0.dictionary, options: .init(sparsity: s, algorithm: settings.algorithm))
            }
        }
        do {
            keyEncoders = try encoders(dictionary.keys, settings.keySparsity)
            valueEncoders = try encoders(dictionary.values, settings.valueSparsity)
        } catch let e as SparseCodingError {
            throw CSRError.badSettings(e.localizedDescription)
        }
    }

    /// Bits of one stored index: ceil(log2(N + online atoms)).
    static func indexWidth(atoms: Int) -> Int {
        atoms <= 1 ? 0 : Int.bitWidth - (atoms - 1).leadingZeroBitCount
    }

    /// A new, empty CSR cache for one session.
    public func makeCache(geometry: KVCacheGeometry, rope: RoPE) -> CSRCache {
        CSRCache(geometry: geometry, rope: rope, codec: self)
    }

    /// cos and sin of every (position, channel pair) for positions 0 ..< capacity:
    /// (capacity, ropeDimension / 2, 2), computed as `RoPE.apply` computes them, so a
    /// key restored from its code is rotated exactly as the dense caches rotate it.
    func ropeTable(_ rope: RoPE, capacity: Int) -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        if let t = ropeTables[capacity] { return t }
        let half = rope.ropeDimension / 2
        var t = [Float](repeating: 0, count: capacity * half * 2)
        for p in 0..<capacity {
            for i in 0..<half {
                let theta = Double(p) * Double(rope.invFreq[i])
                t[(p * half + i) * 2] = Float(cos(theta))
                t[(p * half + i) * 2 + 1] = Float(sin(theta))
            }
        }
        ropeTables[capacity] = t
        return t
    }
}
