import SparseCoding

/// How a CSR cache codes a session's keys and values, as written after `--kv csr:`.
///
/// - `csr:S` is the paper's CSR-S preset: keys with S pairs per head vector, values with
///   S / s_n pairs per chunk (S / 2 with the paper's s_n = 2), so keys and values cost
///   the same number of pairs.
/// - Options follow, comma-separated: `k=S` and `v=S` (pairs per key vector, per value
///   chunk), `coef=f16|i8|i4...i7` (coefficient storage), `alg=mp|omp` (pursuit), `online=M` (online atoms per layer for
///   keys and for values, sampled from the prompt), `guard=F` (at most this fraction of
///   vectors kept exactly in the guard bank), `guard-error=E` (relative squared error above
///   which a vector is a guard candidate), `err=E` (error-targeted pursuit: each vector
///   takes atoms until its relative squared error ||x - x̂||² / ||x||², with coefficients
///   as stored, is at most E; the sparsity becomes a cap, CSR-16 unless given; vectors
///   that miss E at the cap go to the guard bank, all of them unless `guard=F` says
///   otherwise), `ec=gaps` (each vector's pairs in ascending atom order, the indices
///   stored as Rice-coded gaps; see ``IndexCoding``), `ec=rans` (atom indices entropy-coded
///   with the dictionary's static tables in the stored and transferred form; see
///   ``IndexCoding``), `ec=gaps+coef` (or `rans+coef`, or `coef` alone: the int8
///   coefficients and their scales Huffman-coded too; see ``coefficientCoded``), `recent=W` (the
///   latest W tokens also kept in fp16, as KIVI's and the CSR paper's full-precision
///   buffer; attention reads them instead of their codes; counted), `buffer=i8` (the
///   buffer's rows stored as int8 with an fp16 scale per head vector, 8.25 bits per channel
///   instead of 16; see ``BufferFormat``), `sink=N` (the first
///   N tokens' vectors always in the guard bank, outside its budget: the attention sink),
///   `k@L=S` or `k@A-B=S` (and `v@...`: pairs per key vector, per value chunk, of layer L or
///   layers A through B; the others keep `k=`/`v=`: a sparsity allocated per layer).
///   Examples: `csr:8`, `csr:4,coef=i8`, `csr:k=3,v=1`, `csr:8,online=0,guard=0`,
///   `csr:err=0.1,coef=i8`, `csr:24,err=0.05`, `csr:16,coef=i8,ec=rans`, `csr:8,coef=i8,recent=32,sink=4`,
///   `csr:8,k@0-1=16,k@20-29=6`.
public struct CSRSettings: Sendable, Equatable, CustomStringConvertible {
    /// Longest spelling a payload or a peer may carry: a sparsity per layer (`k@L=S`) can
    /// run to a few hundred characters.
    public static let maxDescriptionLength = 1024
    /// Pairs per key vector chunk.
    public var keySparsity: Int
    /// Pairs per value vector chunk.
    public var valueSparsity: Int
    public var coefficients: CoefficientFormat = .float16
    /// With int8 coefficients, their bits in the stored and transferred form: 8 (`coef=i8`)
    /// or 4...7 (`coef=i6`: q in -31...31 against a per-row scale of peak / 31, held as
    /// int8 in memory and packed to 6 bits when stored).
    public var coefficientBits = 8
    /// MP (the paper's) or OMP, which re-fits the coefficients of the chosen atoms by least
    /// squares: the same storage, a smaller residual, more encoding work.
    public var algorithm: PursuitAlgorithm = .matchingPursuit
    /// Online atoms per layer (for keys, and as many for values), chosen from the first
    /// tokens a session appends (its prompt).
    public var onlineAtoms: Int = CSRSettings.defaultOnlineAtoms
    /// Largest fraction of a layer's vectors the guard bank keeps exactly (fp16).
    public var guardFraction: Double = CSRSettings.defaultGuardFraction
    /// Relative squared error ||x - x̂||² / ||x||² above which a vector is a guard candidate
    /// (the worst candidates are kept first).
    public var guardError: Float = CSRSettings.defaultGuardError
    /// Error-targeted pursuit: the largest relative squared error a vector may keep. Each
    /// vector stores as many pairs as it needs (at most the sparsity, which becomes a
    /// cap) and its pair count; nil: every vector takes exactly the sparsity.
    public var errorBudget: Float?
    /// How the stored and transferred form (whose size ``CSRCache/byteCount`` reports)
    /// writes atom indices (`ec=`). In memory they stay fixed-width, as the fused attention
    /// reads them.
    public enum IndexCoding: Sendable, Equatable {
        /// Packed to a fixed width (`ec=none`).
        case fixed
        /// rANS over the dictionary's static per-group tables (`ec=rans`).
        case rans
        /// Each row's pairs held in ascending atom order, its indices stored as Rice-coded
        /// gaps (`GapCoding`): a row says which atoms it uses, not in which order the
        /// pursuit found them, log2(s!) bits less (`ec=gaps`).
        case gaps
    }
    public var indexCoding = IndexCoding.fixed
    /// Indices rANS-coded (``IndexCoding/rans``).
    public var entropyCoded: Bool {
        get { indexCoding == .rans }
        set { indexCoding = newValue ? .rans : (indexCoding == .rans ? .fixed : indexCoding) }
    }
    /// Whether the stored and transferred form entropy-codes the int8 coefficients and
    /// their rows' scales (`ec=gaps+coef`, `ec=rans+coef`, `ec=coef`; see
    /// `CoefficientCoding`): each section codes them with Huffman codes made for it, or
    /// keeps them fixed-width where that is smaller (a few rows). Memory keeps them as int8.
    public var coefficientCoded = false
    /// Indices gap-coded (``IndexCoding/gaps``).
    public var gapCoded: Bool { indexCoding == .gaps }
    /// The latest tokens whose keys and values are also kept in fp16 (stored, counted and
    /// transferred); attention reads those rows instead of their codes. A token is coded
    /// when it leaves the buffer, from its fp16 row, so buffered tokens cost their rows alone.
    public var recentTokens = 0
    /// How the `recent=` buffer stores its rows (`buffer=`).
    public enum BufferFormat: Sendable, Equatable {
        /// fp16 values (`buffer=f16`, the default).
        case float16
        /// Each head vector (headDim channels) as int8 q in -127...127 times one fp16 scale,
        /// peak / 127 (`buffer=i8`): 8 + 16 / headDim bits per channel.
        case int8
    }
    public var recentFormat = BufferFormat.float16
    /// With `buffer=i8`, channels per int8 scale: 0 for the whole head vector (`buffer=i8`),
    /// or 8, 16 or 32 (`buffer=i8g16`: 8 + 16 / 16 = 9 bits per channel). Keys have a few
    /// large channels; a scale per group keeps them from coarsening the rest of the vector.
    public var bufferGroup = 0
    /// The channel groups `buffer=i8gN` accepts (each divides any head size that is a
    /// multiple of 32).
    public static let bufferGroups = [8, 16, 32]
    /// The first tokens whose vectors the guard bank always keeps (fp16, counted), outside
    /// `guardFraction`: the tokens most of the attention of many heads rests on.
    public var sinkTokens = 0

    /// Per-layer sparsity (layer: pairs) where it differs from `keySparsity` / `valueSparsity`.
    public var keySparsityByLayer: [Int: Int] = [:]
    public var valueSparsityByLayer: [Int: Int] = [:]

    /// Pairs per key vector chunk of layer `layer`.
    public func keySparsity(layer: Int) -> Int { keySparsityByLayer[layer] ?? keySparsity }
    /// Pairs per value vector chunk of layer `layer`.
    public func valueSparsity(layer: Int) -> Int { valueSparsityByLayer[layer] ?? valueSparsity }

    public static let defaultOnlineAtoms = 0
    public static let defaultGuardFraction = 0.0
    public static let defaultGuardError: Float = 0.25
    /// The cap of error-targeted pursuit when no sparsity is given: CSR-16.
    public static let defaultErrorCap = 16

    public init(keySparsity: Int, valueSparsity: Int) {
        self.keySparsity = keySparsity
        self.valueSparsity = valueSparsity
    }

    /// The CSR-S preset for a dictionary whose values use `valueChunks` chunks.
    public static func preset(_ s: Int, valueChunks: Int = 2) -> CSRSettings {
        CSRSettings(keySparsity: s, valueSparsity: max(1, s / max(valueChunks, 1)))
    }

    /// Parses the part after `csr:` (see the type's documentation).
    public init(parsing spec: String, valueChunks: Int = 2) throws {
        let spec = spec.lowercased().hasPrefix("csr:") ? String(spec.dropFirst(4)) : spec
        var items = spec.split(separator: ",", omittingEmptySubsequences: false).map {
            String($0).trimmingCharacters(in: .whitespaces)
        }
        guard !items.isEmpty, !items[0].isEmpty else { throw CSRError.badSettings("empty specification after 'csr:'") }
        var s = CSRSettings(keySparsity: 0, valueSparsity: 0)
        var guardGiven = false
        if let preset = Int(items[0]) {
            s = .preset(preset, valueChunks: valueChunks)
            guard preset >= 1 else { throw CSRError.badSettings("CSR-\(preset): the sparsity must be at least 1") }
            items.removeFirst()
        }
        for item in items {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw CSRError.badSettings("'\(item)' is not NAME=VALUE") }
            func int() throws -> Int {
                guard let v = Int(kv[1]), v >= 0 else { throw CSRError.badSettings("\(kv[0])=\(kv[1]) is not a count") }
                return v
            }
            func real() throws -> Double {
                guard let v = Double(kv[1]), v >= 0, v.isFinite else { throw CSRError.badSettings("\(kv[0])=\(kv[1]) is not a non-negative number") }
                return v
            }
            let name = kv[0].lowercased()
            if name.hasPrefix("k@") || name.hasPrefix("v@") {
                let layers = try Self.layerRange(String(name.dropFirst(2)), item: item)
                let pairs = try int()
                for l in layers {
                    if name.hasPrefix("k@") { s.keySparsityByLayer[l] = pairs } else { s.valueSparsityByLayer[l] = pairs }
                }
                continue
            }
            switch name {
            case "k": s.keySparsity = try int()
            case "v": s.valueSparsity = try int()
            case "coef":
                switch kv[1].lowercased() {
                case "f16", "fp16": s.coefficients = .float16
                case "i8", "int8": (s.coefficients, s.coefficientBits) = (.int8, 8)
                case "i4", "i5", "i6", "i7": (s.coefficients, s.coefficientBits) = (.int8, Int(kv[1].dropFirst())!)
                default: throw CSRError.badSettings("coef=\(kv[1]): use f16, i8, or i4 to i7")
                }
            case "alg":
                switch kv[1].lowercased() {
                case "mp": s.algorithm = .matchingPursuit
                case "omp": s.algorithm = .orthogonal
                default: throw CSRError.badSettings("alg=\(kv[1]): use mp or omp")
                }
            case "online": s.onlineAtoms = try int()
            case "guard":
                guardGiven = true
                s.guardFraction = try real()
                guard s.guardFraction <= 1 else { throw CSRError.badSettings("guard=\(kv[1]) is a fraction of vectors, at most 1") }
            case "guard-error": s.guardError = Float(try real())
            case "err":
                let e = try real()
                guard e > 0, e < 1 else { throw CSRError.badSettings("err=\(kv[1]) is a relative squared error, in (0, 1)") }
                s.errorBudget = Float(e)
            case "ec":
                // What is entropy-coded: the indices (one of gaps, rans, none) and, with
                // `+coef` or `coef` alone, the coefficients.
                let parts = kv[1].lowercased().split(separator: "+", omittingEmptySubsequences: false)
                (s.indexCoding, s.coefficientCoded) = (.fixed, false)
                for (i, part) in parts.enumerated() {
                    switch part {
                    case "rans" where i == 0: s.indexCoding = .rans
                    case "gaps" where i == 0: s.indexCoding = .gaps
                    case "none" where i == 0 && parts.count == 1: s.indexCoding = .fixed
                    case "coef" where i == parts.count - 1: s.coefficientCoded = true
                    default: throw CSRError.badSettings("ec=\(kv[1]): use gaps, rans or none for the indices, gaps+coef or rans+coef or coef to code the coefficients too")
                    }
                }
            case "recent":
                s.recentTokens = try int()
                guard s.recentTokens <= 4096 else { throw CSRError.badSettings("recent=\(kv[1]) is more than 4096 tokens") }
            case "buffer":
                switch kv[1].lowercased() {
                case "f16", "fp16": (s.recentFormat, s.bufferGroup) = (.float16, 0)
                case "i8", "int8": (s.recentFormat, s.bufferGroup) = (.int8, 0)
                case let f where f.hasPrefix("i8g"):
                    guard let g = Int(f.dropFirst(3)), Self.bufferGroups.contains(g) else {
                        throw CSRError.badSettings("buffer=\(kv[1]): a scale per 8, 16 or 32 channels (i8g8, i8g16, i8g32)")
                    }
                    s.recentFormat = .int8
                    s.bufferGroup = g
                default: throw CSRError.badSettings("buffer=\(kv[1]): use f16, i8 (a scale per head vector) or i8gN (a scale per N = 8, 16 or 32 channels)")
                }
            case "sink":
                s.sinkTokens = try int()
                guard s.sinkTokens <= 4096 else { throw CSRError.badSettings("sink=\(kv[1]) is more than 4096 tokens") }
            default: throw CSRError.badSettings("unknown option '\(kv[0])' (known: k, v, k@L, v@L, coef, alg, online, guard, guard-error, err, ec, recent, buffer, sink)")
            }
        }
        if s.errorBudget != nil {
            if s.keySparsity == 0 && s.valueSparsity == 0 {
                let cap = CSRSettings.preset(Self.defaultErrorCap, valueChunks: valueChunks)
                (s.keySparsity, s.valueSparsity) = (cap.keySparsity, cap.valueSparsity)
            }
            if !guardGiven { s.guardFraction = 1 }
            guard s.algorithm == .matchingPursuit else {
                throw CSRError.badSettings("err= runs Matching Pursuit (its prefixes are its own shorter codes); drop alg=omp")
            }
        }
        guard (1...PackedCodes.maxSparsity).contains(s.keySparsity), (1...PackedCodes.maxSparsity).contains(s.valueSparsity) else {
            throw CSRError.badSettings("'\(spec)': key and value sparsity must be 1...\(PackedCodes.maxSparsity) (give a preset like csr:8 or k= and v=)")
        }
        if let bad = (Array(s.keySparsityByLayer.values) + Array(s.valueSparsityByLayer.values)).first(where: { !(1...PackedCodes.maxSparsity).contains($0) }) {
            throw CSRError.badSettings("'\(spec)': a layer's sparsity of \(bad); it must be 1...\(PackedCodes.maxSparsity)")
        }
        // Overrides equal to the default say nothing: dropped, so equal settings print alike.
        s.keySparsityByLayer = s.keySparsityByLayer.filter { $0.value != s.keySparsity }
        s.valueSparsityByLayer = s.valueSparsityByLayer.filter { $0.value != s.valueSparsity }
        guard s.recentFormat == .float16 || s.recentTokens > 0 else {
            throw CSRError.badSettings("buffer=i8 sets how the recent= buffer stores its rows; give recent=W too")
        }
        guard !s.coefficientCoded || s.coefficients == .int8 else {
            throw CSRError.badSettings("ec=...coef codes quantized coefficients; give coef=i4 ... coef=i8 too")
        }
        guard s.onlineAtoms <= 4096 else { throw CSRError.badSettings("online=\(s.onlineAtoms) is more than 4096 atoms") }
        self = s
    }

    /// Layers `A` or `A-B` (inclusive) of a `k@`/`v@` option.
    private static func layerRange(_ text: String, item: String) throws -> ClosedRange<Int> {
        let ends = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        guard (1...2).contains(ends.count), let a = ends.first!, let b = ends.last!, a >= 0, a <= b, b < 4096 else {
            throw CSRError.badSettings("'\(item)': give layers as k@L=S or k@A-B=S (A <= B, from 0)")
        }
        return a...b
    }

    /// `k@A-B=S` items for runs of consecutive layers with the same override.
    private static func overrides(_ name: String, _ byLayer: [Int: Int]) -> [String] {
        var out: [String] = [], layers = byLayer.keys.sorted()[...]
        while let a = layers.first {
            var b = a
            layers = layers.dropFirst()
            while let next = layers.first, next == b + 1, byLayer[next] == byLayer[a] { b = next; layers = layers.dropFirst() }
            out.append("\(name)@\(a == b ? "\(a)" : "\(a)-\(b)")=\(byLayer[a]!)")
        }
        return out
    }

    /// The canonical spelling, parseable by ``init(parsing:valueChunks:)``.
    public var description: String {
        var parts = ["k=\(keySparsity)", "v=\(valueSparsity)"]
        parts += Self.overrides("k", keySparsityByLayer) + Self.overrides("v", valueSparsityByLayer)
        if coefficients == .int8 { parts.append("coef=i\(coefficientBits)") }
        if algorithm == .orthogonal { parts.append("alg=omp") }
        if onlineAtoms != Self.defaultOnlineAtoms { parts.append("online=\(onlineAtoms)") }
        if guardFraction != Self.defaultGuardFraction { parts.append("guard=\(guardFraction)") }
        if guardError != Self.defaultGuardError { parts.append("guard-error=\(guardError)") }
        if let errorBudget { parts.append("err=\(errorBudget)") }
        let coded: String? = switch indexCoding {
        case .fixed: coefficientCoded ? "coef" : nil
        case .rans: coefficientCoded ? "rans+coef" : "rans"
        case .gaps: coefficientCoded ? "gaps+coef" : "gaps"
        }
        if let coded { parts.append("ec=\(coded)") }
        if recentTokens > 0 { parts.append("recent=\(recentTokens)") }
        if recentFormat == .int8 { parts.append(bufferGroup == 0 ? "buffer=i8" : "buffer=i8g\(bufferGroup)") }
        if sinkTokens > 0 { parts.append("sink=\(sinkTokens)") }
        return "csr:" + parts.joined(separator: ",")
    }
}
