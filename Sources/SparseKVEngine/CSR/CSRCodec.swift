import CShims
import Foundation
import SparseCoding

/// What every CSR cache of one model shares: the offline dictionary, the settings, an
/// encoder per dictionary group, and RoPE tables. Made once per process (per `--kv`
/// setting); caches are made from it per session.
public final class CSRCodec: @unchecked Sendable {
    public let dictionary: CSRDictionary
    public let settings: CSRSettings
    /// Per key group and per value group, per sparsity: MP encoders over the offline atoms,
    /// built on first use, so a worker pays for the Gram matrices of its own layers' groups only.
    private var keyEncoders: [[Int: MatchingPursuitEncoder]]
    private var valueEncoders: [[Int: MatchingPursuitEncoder]]

    private let lock = NSLock()
    private var ropeTables: [Int: AlignedFloats] = [:]
    private var splitRopeTables: [Int: AlignedFloats] = [:]
    /// Per key group, its offline atoms as fixed point (nil inside: they do not fit), made on first use.
    private var keyFixedAtoms: [Int: FixedPointAtoms?] = [:]

    /// - Throws: `CSRError.badSettings` when a sparsity exceeds what the encoder supports
    ///   or a group's Gram matrix would be too large.
    public init(dictionary: CSRDictionary, settings: CSRSettings) throws {
        self.dictionary = dictionary
        self.settings = settings
        keyEncoders = Array(repeating: [:], count: dictionary.keys.groups.count)
        valueEncoders = Array(repeating: [:], count: dictionary.values.groups.count)
        if settings.entropyCoded {
            guard let t = dictionary.entropyTables else {
                throw CSRError.badSettings("ec=rans needs a dictionary with entropy tables: count them with `sparsekv dict tables`")
            }
            if let why = t.check(keys: dictionary.keys, values: dictionary.values) { throw CSRError.badSettings("entropy tables: \(why)") }
        }
        // Check now what building an encoder could refuse later.
        let layers = dictionary.model.layerCount
        if let l = (Array(settings.keySparsityByLayer.keys) + Array(settings.valueSparsityByLayer.keys)).first(where: { $0 >= layers }) {
            throw CSRError.badSettings("a sparsity for layer \(l); the model has layers 0...\(layers - 1)")
        }
        let keys = [settings.keySparsity] + Array(settings.keySparsityByLayer.values)
        let values = [settings.valueSparsity] + Array(settings.valueSparsityByLayer.values)
        for (part, sparsities) in [(dictionary.keys, keys), (dictionary.values, values)] {
            for g in part.groups where SparseDictionary.gramByteCount(atomCount: g.atomCount) > SparseDictionary.maxGramBytes {
                throw CSRError.badSettings("a dictionary group of \(g.atomCount) atoms is too large to encode with")
            }
            for s in sparsities {
                guard s >= 1, s <= PackedCodes.maxSparsity,
                      settings.algorithm == .matchingPursuit || s <= part.atomCount
                else { throw CSRError.badSettings("sparsity \(s) with \(part.atomCount) atoms (\(settings.algorithm.rawValue))") }
            }
        }
    }

    /// The encoder of `sparsity` pairs over group `group`'s offline atoms of keys (or
    /// values), built on first use.
    func encoder(keys: Bool, group: Int, sparsity: Int) throws -> MatchingPursuitEncoder {
        lock.lock()
        defer { lock.unlock() }
        if let e = keys ? keyEncoders[group][sparsity] : valueEncoders[group][sparsity] { return e }
        let part = keys ? dictionary.keys : dictionary.values
        let e: MatchingPursuitEncoder
        do {
            e = try MatchingPursuitEncoder(
                dictionary: part.groups[group].dictionary,
                options: .init(sparsity: sparsity, algorithm: settings.algorithm, keepsGram: false))
        } catch let error as SparseCodingError {
            throw CSRError.badSettings(error.localizedDescription)
        }
        if keys { keyEncoders[group][sparsity] = e } else { valueEncoders[group][sparsity] = e }
        return e
    }

    /// Key group `group`'s offline atoms as fixed point, which key streams with int8
    /// coefficients read (``FixedPointAtoms``): one copy for every session and layer of the
    /// group, made on first use; nil with fp16 coefficients or atoms that do not fit.
    func fixedKeyAtoms(group: Int) -> FixedPointAtoms? {
        guard settings.coefficients == .int8 else { return nil }
        lock.lock()
        defer { lock.unlock() }
        if let f = keyFixedAtoms[group] { return f }
        let g = dictionary.keys.groups[group]
        let f = FixedPointAtoms(bits: g.storedAtoms, m: g.dictionary.dimension)
        keyFixedAtoms[group] = .some(f)
        return f
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
    func ropeTable(_ rope: RoPE, capacity: Int) -> AlignedFloats {
        lock.lock()
        defer { lock.unlock() }
        if let t = ropeTables[capacity] { return t }
        let half = rope.ropeDimension / 2
        let t = AlignedFloats(count: capacity * half * 2) { t in
            for p in 0..<capacity {
                for i in 0..<half {
                    let theta = Double(p) * Double(rope.invFreq[i])
                    t[(p * half + i) * 2] = Float(cos(theta))
                    t[(p * half + i) * 2 + 1] = Float(sin(theta))
                }
            }
        }
        ropeTables[capacity] = t
        return t
    }

    /// ``ropeTable(_:capacity:)`` with each 64-float position row in the split order of
    /// `csr_keys.h` (cos of pairs 0 ..< 16, their sin, cos of pairs 16 ..< 32, their sin), as
    /// the fixed-point key kernels read it: a position's pairs then rotate without lane
    /// shuffles. 64-channel rotations (32 pairs) only. A row of the (cos, sin) table holds
    /// pair c / 2's cos at c for even c and its sin at odd c, so it permutes as a key row does.
    func splitRopeTable(_ rope: RoPE, capacity: Int) -> AlignedFloats {
        precondition(rope.ropeDimension == 64, "the split RoPE table is for 32 pairs")
        let t = ropeTable(rope, capacity: capacity)
        lock.lock()
        defer { lock.unlock() }
        if let split = splitRopeTables[capacity] { return split }
        let split = AlignedFloats(count: capacity * 64) { out in
            t.withUnsafeBufferPointer { tb in
                for p in 0..<capacity {
                    for i in 0..<64 { out[p * 64 + i] = tb[p * 64 + sparsekv_split_channel(i)] }
                }
            }
        }
        splitRopeTables[capacity] = split
        return split
    }
}
