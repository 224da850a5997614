import Crypto
import Foundation
import SparseCoding

/// The offline part of a CSR dictionary for one model: for keys and for values, one
/// ``SparseDictionary`` per group of adjacent layers, the number of channel chunks a head
/// vector is split into (s_n), what the dictionary was trained on and how well it fit.
///
/// Atoms are kept at fp16 precision (they are stored so), so a dictionary in memory and
/// the same dictionary read back from its file are identical, and so is their
/// ``contentHash``, which the cluster stamps on every KV transfer.
public struct CSRDictionary: Sendable {
    /// The model a dictionary belongs to.
    public struct ModelInfo: Sendable, Equatable, Codable {
        public var architecture: String
        public var name: String
        /// ``ModelFingerprint`` of the model's GGUF.
        public var fingerprint: String
        public var layerCount: Int
        public var kvHeads: Int
        public var headDim: Int

        public init(architecture: String, name: String, fingerprint: String, layerCount: Int, kvHeads: Int, headDim: Int) {
            self.architecture = architecture
            self.name = name
            self.fingerprint = fingerprint
            self.layerCount = layerCount
            self.kvHeads = kvHeads
            self.headDim = headDim
        }

        /// The identity of a loaded model (any slice of it).
        public init(model: LlamaModel) {
            self.init(architecture: "llama", name: model.name, fingerprint: model.fingerprint,
                      layerCount: model.config.layerCount, kvHeads: model.config.kvHeadCount,
                      headDim: model.config.headDim)
        }
    }

    /// One dictionary shared by adjacent layers.
    ///
    /// A group read from a file keeps its fp16 atoms and makes the fp32 dictionary (what the
    /// encoder and training use) on first use, so a worker holds fp32 atoms only for the
    /// groups of its own layers.
    public struct Group: Sendable {
        public let layers: Range<Int>
        /// N and m of the group's dictionary.
        public let atomCount: Int, dimension: Int
        /// Mean squared error per element on the training and held-out vectors at the end
        /// of training (nil when not trained here).
        public var trainMSE: Double?
        public var testMSE: Double?
        /// (N, m) the atoms as stored: fp16 bit patterns. The dictionary is made from
        /// these, and the content hash covers them.
        let storedAtoms: [UInt16]
        private let made: MadeOnFirstUse

        /// The group's dictionary: the trained one, or the stored atoms normalised as
        /// every dictionary is (made on first use and kept).
        public var dictionary: SparseDictionary {
            // `init(layers:storedAtoms:...)` made it once already, so it cannot fail here.
            made.value { try! Self.dictionary(storedAtoms: storedAtoms, atomCount: atomCount, dimension: dimension) }
        }

        public init(layers: Range<Int>, dictionary: SparseDictionary, trainMSE: Double? = nil, testMSE: Double? = nil) {
            self.layers = layers
            atomCount = dictionary.atomCount
            dimension = dictionary.dimension
            self.trainMSE = trainMSE
            self.testMSE = testMSE
            storedAtoms = dictionary.atoms.map { Float16($0).bitPattern }
            made = MadeOnFirstUse(dictionary)
        }

        /// A group from its stored fp16 atoms. They are checked now (the dictionary is made
        /// once and dropped); the dictionary itself waits for its first use.
        init(layers: Range<Int>, storedAtoms: [UInt16], atomCount: Int, dimension: Int,
             trainMSE: Double?, testMSE: Double?) throws {
            self.layers = layers
            self.storedAtoms = storedAtoms
            self.atomCount = atomCount
            self.dimension = dimension
            _ = try Self.dictionary(storedAtoms: storedAtoms, atomCount: atomCount, dimension: dimension)
            self.trainMSE = trainMSE
            self.testMSE = testMSE
            made = MadeOnFirstUse(nil)
        }

        /// The dictionary of fp16 atoms, normalised as every dictionary is.
        private static func dictionary(storedAtoms: [UInt16], atomCount: Int, dimension: Int) throws -> SparseDictionary {
            try SparseDictionary(atoms: storedAtoms.map { Float(Float16(bitPattern: $0)) }, atomCount: atomCount,
                                 dimension: dimension)
        }

        /// Whether the fp32 dictionary has been made (tests).
        var dictionaryIsMade: Bool { made.isMade }

        /// Holds a group's dictionary once made; copies of the group share it.
        private final class MadeOnFirstUse: @unchecked Sendable {
            private let lock = NSLock()
            private var dictionary: SparseDictionary?

            init(_ dictionary: SparseDictionary?) { self.dictionary = dictionary }

            var isMade: Bool {
                lock.lock()
                defer { lock.unlock() }
                return dictionary != nil
            }

            func value(_ make: () -> SparseDictionary) -> SparseDictionary {
                lock.lock()
                defer { lock.unlock() }
                if let dictionary { return dictionary }
                let d = make()
                dictionary = d
                return d
            }
        }
    }

    /// The dictionaries for keys or for values.
    public struct Part: Sendable {
        /// s_n: a head vector is coded as this many chunks of headDim / chunks channels.
        public let chunks: Int
        /// Contiguous groups covering every layer of the model in order.
        public let groups: [Group]
        /// group index of each layer
        let groupOfLayer: [Int]

        public init(chunks: Int, groups: [Group]) {
            self.chunks = chunks
            self.groups = groups
            var g: [Int] = []
            for (i, x) in groups.enumerated() { g += Array(repeating: i, count: x.layers.count) }
            groupOfLayer = g
        }

        /// The group that codes `layer`.
        public func group(ofLayer layer: Int) -> Int { groupOfLayer[layer] }
        public func dictionary(forLayer layer: Int) -> SparseDictionary { groups[groupOfLayer[layer]].dictionary }
        /// N, the atoms of each group's dictionary (the same for every group).
        public var atomCount: Int { groups.first?.atomCount ?? 0 }
    }

    public let model: ModelInfo
    public let keys: Part
    public let values: Part
    /// Free-form training record (settings, corpus, timings), written as GGUF metadata
    /// under `csr.train.`.
    public let training: [String: String]
    /// Hex SHA-256 of the layout and the atoms: the dictionary's identity.
    public let contentHash: String
    /// Static index tables for entropy coding (`ec=rans`), nil until counted.
    public private(set) var entropyTables: CSREntropyTables?
    /// The metric the key dictionaries were trained in and keys are coded in (nil: plain
    /// squared error). Part of the content hash: codes made in one metric mean nothing in
    /// another.
    public let keyMetric: CSRKeyMetric?

    /// Makes a dictionary, rounding every atom to fp16 precision (and back to unit norm).
    ///
    /// - Throws: `CSRError.badSettings` when groups do not cover the model's layers in
    ///   order, chunk counts do not divide the head dim, or atom sizes disagree.
    ///   A `keyMetric` must have the model's shape.
    public init(model: ModelInfo, keys: Part, values: Part, training: [String: String] = [:],
                keyMetric: CSRKeyMetric? = nil) throws {
        self.model = model
        self.keys = try Self.roundedToHalf(keys, model: model, what: "key")
        self.values = try Self.roundedToHalf(values, model: model, what: "value")
        self.training = training
        if let why = keyMetric.flatMap({ Self.check($0, model: model) }) { throw CSRError.badSettings(why) }
        self.keyMetric = keyMetric
        contentHash = Self.hash(model: model, keys: self.keys, values: self.values, keyMetric: keyMetric)
    }

    private init(model: ModelInfo, checkedKeys: Part, checkedValues: Part, training: [String: String], hash: String,
                 tables: CSREntropyTables?, keyMetric: CSRKeyMetric?) {
        self.model = model
        keys = checkedKeys
        values = checkedValues
        self.training = training
        contentHash = hash
        entropyTables = tables
        self.keyMetric = keyMetric
    }

    /// Why `metric` does not fit `model` (nil when it does).
    static func check(_ metric: CSRKeyMetric, model: ModelInfo) -> String? {
        metric.layerCount == model.layerCount && metric.kvHeads == model.kvHeads && metric.headDim == model.headDim ? nil
            : "key metric of \(metric.layerCount) layers, \(metric.kvHeads) KV heads of \(metric.headDim) for a model of \(model.layerCount), \(model.kvHeads) of \(model.headDim)"
    }

    /// This dictionary with entropy tables (replacing any it had).
    ///
    /// - Throws: `CSRError.badSettings` when the tables do not match the groups.
    public func withEntropyTables(_ tables: CSREntropyTables) throws -> CSRDictionary {
        if let why = tables.check(keys: keys, values: values) { throw CSRError.badSettings("entropy tables: \(why)") }
        var d = self
        d.entropyTables = tables
        return d
    }

    static func roundedToHalf(_ part: Part, model: ModelInfo, what: String) throws -> Part {
        guard part.chunks >= 1, model.headDim % part.chunks == 0 else {
            throw CSRError.badSettings("\(what) chunks \(part.chunks) do not divide head dim \(model.headDim)")
        }
        var next = 0
        for g in part.groups {
            guard g.layers.lowerBound == next, !g.layers.isEmpty else {
                throw CSRError.badSettings("\(what) groups must cover layers 0..<\(model.layerCount) in order")
            }
            next = g.layers.upperBound
            guard g.dimension == model.headDim / part.chunks, g.atomCount == part.groups[0].atomCount
            else { throw CSRError.badSettings("\(what) group \(g.layers) has atoms of another size") }
        }
        guard next == model.layerCount else {
            throw CSRError.badSettings("\(what) groups cover \(next) layers, the model has \(model.layerCount)")
        }
        return Part(chunks: part.chunks, groups: try part.groups.map { g in
            try Group(layers: g.layers, storedAtoms: g.storedAtoms, atomCount: g.atomCount,
                      dimension: g.dimension, trainMSE: g.trainMSE, testMSE: g.testMSE)
        })
    }

    /// The layout fields and every atom as fp16 bytes, in a fixed order, then the key
    /// metric's weights when there is one (so dictionaries without one keep their hash).
    static func hash(model: ModelInfo, keys: Part, values: Part, keyMetric: CSRKeyMetric?) -> String {
        var h = SHA256()
        func add(_ s: String) { h.update(data: Data((s + "\u{0}").utf8)) }
        add("sparsekv-csr-dictionary-v1")
        add("\(model.fingerprint) \(model.layerCount) \(model.kvHeads) \(model.headDim)")
        for (name, part) in [("k", keys), ("v", values)] {
            add("\(name) \(part.chunks) \(part.groups.count)")
            for g in part.groups {
                add("\(g.layers.lowerBound) \(g.layers.upperBound) \(g.atomCount) \(g.dimension)")
                g.storedAtoms.withUnsafeBytes { h.update(bufferPointer: $0) }
            }
        }
        if let m = keyMetric {
            add("key-metric query \(m.layerCount) \(m.kvHeads) \(m.headDim)")
            m.pairWeights.map { $0.bitPattern.littleEndian }.withUnsafeBytes { h.update(bufferPointer: $0) }
        }
        return ModelFingerprint.hex(h.finalize())
    }

    /// Checks that this dictionary was made for the model `info` describes.
    public func check(model info: ModelInfo, path: String = "dictionary") throws {
        guard info.fingerprint == model.fingerprint, info.layerCount == model.layerCount,
              info.kvHeads == model.kvHeads, info.headDim == model.headDim
        else {
            throw CSRError.modelMismatch(
                dictionary: path, dictionaryModel: "\(model.name) (\(model.fingerprint.prefix(12)))",
                model: "\(info.name) (\(info.fingerprint.prefix(12)))")
        }
    }

    /// Bytes the offline atoms of every group take in memory as fp32 (reported once per
    /// node; a worker makes only its own layers' groups).
    public var atomByteCount: Int {
        (keys.groups + values.groups).reduce(0) { $0 + $1.atomCount * $1.dimension * 4 }
    }

    // MARK: - GGUF file

    /// Version 1: atoms only. Version 2 adds the entropy tables. Version 3 adds the key
    /// metric (entropy tables optional). A file is written with the lowest version that
    /// holds what it has, so older builds read what they can use and refuse the rest.
    static let formatVersion = 3

    /// The version this dictionary is written as.
    var fileVersion: Int { keyMetric != nil ? 3 : entropyTables != nil ? 2 : 1 }

    /// The dictionary as a GGUF file: metadata under `csr.` and one F16 tensor of (N, m)
    /// atoms per group, `csr.key.<g>` and `csr.value.<g>`; with entropy tables (version 2)
    /// also `csr.tables.source`, `csr.tables.hash` and one int32 array of N + 1
    /// frequencies per group, `csr.tables.key.<g>` and `csr.tables.value.<g>`; with a key
    /// metric (version 3) `csr.key_metric.kind` ("query"), `csr.key_metric.source` and
    /// `csr.key_metric.pair_weights`, (layers, KV heads, headDim / 2) float32.
    public func ggufData() throws -> Data {
        var w = GGUFWriter()
        w.set("general.architecture", .string("sparsekv-csr"))
        w.set("general.name", .string("CSR dictionary for \(model.name)"))
        w.set("csr.version", .uint32(UInt32(fileVersion)))
        if let m = keyMetric {
            w.set("csr.key_metric.kind", .string("query"))
            w.set("csr.key_metric.source", .string(m.source))
            w.set("csr.key_metric.pair_weights", floats: m.pairWeights)
        }
        if let t = entropyTables {
            w.set("csr.tables.source", .string(t.source))
            w.set("csr.tables.hash", .string(t.contentHash))
            for (name, tables) in [("key", t.keys), ("value", t.values)] {
                for (i, table) in tables.enumerated() {
                    w.set("csr.tables.\(name).\(i)", int32s: table.frequencies.map { Int32($0) })
                }
            }
        }
        w.set("csr.content_hash", .string(contentHash))
        w.set("csr.model.architecture", .string(model.architecture))
        w.set("csr.model.name", .string(model.name))
        w.set("csr.model.fingerprint", .string(model.fingerprint))
        w.set("csr.model.layer_count", .uint32(UInt32(model.layerCount)))
        w.set("csr.model.kv_head_count", .uint32(UInt32(model.kvHeads)))
        w.set("csr.model.head_dim", .uint32(UInt32(model.headDim)))
        for (name, part) in [("key", keys), ("value", values)] {
            w.set("csr.\(name).chunks", .uint32(UInt32(part.chunks)))
            w.set("csr.\(name).atom_count", .uint32(UInt32(part.atomCount)))
            w.set("csr.\(name).group_starts", int32s: part.groups.map { Int32($0.layers.lowerBound) })
            w.set("csr.\(name).train_mse", floats: part.groups.map { Float($0.trainMSE ?? .nan) })
            w.set("csr.\(name).test_mse", floats: part.groups.map { Float($0.testMSE ?? .nan) })
            for (i, g) in part.groups.enumerated() {
                try w.addTensor(name: "csr.\(name).\(i)", shape: [g.dimension, g.atomCount],
                                type: .f16, bytes: g.storedAtoms.withUnsafeBytes { Array($0) })
            }
        }
        for (k, v) in training.sorted(by: { $0.key < $1.key }) { w.set("csr.train.\(k)", .string(v)) }
        return try w.data()
    }

    /// Writes the GGUF file (atomically: a temporary file renamed into place).
    public func write(to path: String) throws {
        let url = URL(fileURLWithPath: path)
        try ggufData().write(to: url, options: .atomic)
    }

    /// Reads and checks a dictionary file: every field, every tensor shape, and the atoms
    /// against the recorded content hash.
    public static func load(path: String) throws -> CSRDictionary {
        let f: GGUFFile
        do { f = try GGUFFile(path: path) } catch {
            throw CSRError.badDictionaryFile(path: path, reason: error.localizedDescription)
        }
        func bad(_ r: String) -> CSRError { .badDictionaryFile(path: path, reason: r) }
        do {
            guard (try? f.string("general.architecture")) == "sparsekv-csr" else {
                throw bad("general.architecture is not 'sparsekv-csr' (is it a model file?)")
            }
            let version = try f.int("csr.version")
            guard (1...formatVersion).contains(version) else {
                throw bad("format version \(version), this build reads versions 1 to \(formatVersion) (a newer sparsekv wrote it: update sparsekv)")
            }
            let info = ModelInfo(
                architecture: try f.string("csr.model.architecture"), name: try f.string("csr.model.name"),
                fingerprint: try f.string("csr.model.fingerprint"), layerCount: try f.int("csr.model.layer_count"),
                kvHeads: try f.int("csr.model.kv_head_count"), headDim: try f.int("csr.model.head_dim"))
            guard (1...4096).contains(info.layerCount), (1...1024).contains(info.kvHeads), (1...4096).contains(info.headDim) else {
                throw bad("model shape out of range")
            }
            func part(_ name: String) throws -> Part {
                let chunks = try f.int("csr.\(name).chunks"), n = try f.int("csr.\(name).atom_count")
                let starts = try f.intArray("csr.\(name).group_starts")
                let train = (try? f.floatArray("csr.\(name).train_mse")) ?? []
                let test = (try? f.floatArray("csr.\(name).test_mse")) ?? []
                guard chunks >= 1, info.headDim % chunks == 0 else { throw bad("\(name) chunks \(chunks)") }
                guard (1...SparseDictionary.maxAtomCount).contains(n) else { throw bad("\(name) atom count \(n)") }
                guard starts.first == 0, zip(starts, starts.dropFirst()).allSatisfy({ $0 < $1 }),
                      let last = starts.last, last < info.layerCount
                else { throw bad("\(name) group starts \(starts)") }
                let m = info.headDim / chunks
                var groups: [Group] = []
                for (i, lo) in starts.enumerated() {
                    let hi = i + 1 < starts.count ? starts[i + 1] : info.layerCount
                    let info = try f.requireTensor("csr.\(name).\(i)", shape: [m, n])
                    guard info.type == .f16 else { throw bad("tensor csr.\(name).\(i) is \(info.type), expected F16") }
                    let raw = f.rawData(info)
                    let bits = (0..<n * m).map { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) }
                    func num(_ a: [Float]) -> Double? { i < a.count && a[i].isFinite ? Double(a[i]) : nil }
                    groups.append(try Group(layers: lo..<hi, storedAtoms: bits, atomCount: n, dimension: m,
                                            trainMSE: num(train), testMSE: num(test)))
                }
                return Part(chunks: chunks, groups: groups)
            }
            let keys = try part("key"), values = try part("value")
            var metric: CSRKeyMetric?
            if version >= 3 {
                guard (try? f.string("csr.key_metric.kind")) == "query" else { throw bad("csr.key_metric.kind is not 'query'") }
                metric = try CSRKeyMetric(layerCount: info.layerCount, kvHeads: info.kvHeads, headDim: info.headDim,
                                          pairWeights: try f.floatArray("csr.key_metric.pair_weights"),
                                          source: (try? f.string("csr.key_metric.source")) ?? "")
            }
            let recorded = try f.string("csr.content_hash")
            let computed = hash(model: info, keys: keys, values: values, keyMetric: metric)
            guard recorded == computed else { throw CSRError.corruptDictionary(path: path, recorded: recorded, computed: computed) }
            var training: [String: String] = [:]
            for key in f.metadataKeys where key.hasPrefix("csr.train.") {
                training[String(key.dropFirst("csr.train.".count))] = f.metadata[key]?.stringValue
            }
            var tables: CSREntropyTables?
            if version == 2 || (version >= 3 && f.metadata["csr.tables.hash"] != nil) {
                func read(_ name: String, _ part: Part) throws -> [FrequencyTable] {
                    try (0..<part.groups.count).map { i in
                        let freqs = try f.intArray("csr.tables.\(name).\(i)")
                        guard freqs.allSatisfy({ $0 >= 1 && $0 <= FrequencyTable.total }) else { throw bad("table \(name).\(i) has a frequency out of range") }
                        do { return try FrequencyTable(frequencies: freqs.map { UInt32($0) }) } catch { throw bad("table \(name).\(i): \(error.localizedDescription)") }
                    }
                }
                let t = CSREntropyTables(keys: try read("key", keys), values: try read("value", values),
                                         source: (try? f.string("csr.tables.source")) ?? "")
                if let why = t.check(keys: keys, values: values) { throw bad("entropy tables: \(why)") }
                guard (try? f.string("csr.tables.hash")) == t.contentHash else { throw bad("the entropy tables do not match their recorded hash") }
                tables = t
            }
            return CSRDictionary(model: info, checkedKeys: keys, checkedValues: values, training: training, hash: computed,
                                 tables: tables, keyMetric: metric)
        } catch let e as CSRError {
            throw e
        } catch let e as SparseCodingError {
            throw bad(e.localizedDescription)
        } catch {
            throw bad(error.localizedDescription)
        }
    }
}
