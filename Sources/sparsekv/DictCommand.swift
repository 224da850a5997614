import ArgumentParser
import Foundation
import SparseCoding
import SparseKVEngine

struct DictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dict",
        abstract: "Train and inspect CSR dictionaries (NeuralDict).",
        subcommands: [DictTrainCommand.self, DictTablesCommand.self, DictMetricCommand.self, DictInfoCommand.self])
}

// MARK: - dict info

struct DictInfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show a dictionary's model, content hash, groups and training record.")

    @Argument(help: "Dictionary file (GGUF).")
    var path: String

    @Flag(help: "Print JSON.")
    var json = false

    struct Info: Codable {
        struct Group: Codable { var layers: String; var atoms: Int; var dimension: Int; var trainMSE: Double?; var testMSE: Double? }
        var path: String
        var contentHash: String
        var model: CSRDictionary.ModelInfo
        var keyChunks: Int
        var valueChunks: Int
        var keyGroups: [Group]
        var valueGroups: [Group]
        var atomBytes: Int
        var training: [String: String]
        /// "query" (with the weights' range and how they were measured) or "l2".
        var keyMetric: KeyMetric
        /// Entropy of each group's static index table, bits per index (nil: no tables).
        var tables: Tables?
        struct KeyMetric: Codable { var kind: String; var source: String?; var minWeight: Float?; var maxWeight: Float? }
        struct Tables: Codable { var source: String; var hash: String; var keyBitsPerIndex: [Double]; var valueBitsPerIndex: [Double] }
    }

    func run() throws {
        let d = try CSRDictionary.load(path: path)
        func groups(_ p: CSRDictionary.Part) -> [Info.Group] {
            p.groups.map { .init(layers: "\($0.layers.lowerBound)-\($0.layers.upperBound - 1)", atoms: $0.dictionary.atomCount,
                                 dimension: $0.dictionary.dimension, trainMSE: $0.trainMSE, testMSE: $0.testMSE) }
        }
        let info = Info(path: path, contentHash: d.contentHash, model: d.model, keyChunks: d.keys.chunks,
                        valueChunks: d.values.chunks, keyGroups: groups(d.keys), valueGroups: groups(d.values),
                        atomBytes: d.atomByteCount, training: d.training,
                        keyMetric: d.keyMetric.map { .init(kind: "query", source: $0.source, minWeight: $0.pairWeights.min(),
                                                           maxWeight: $0.pairWeights.max()) } ?? .init(kind: "l2"),
                        tables: d.entropyTables.map { t in
                            .init(source: t.source, hash: t.contentHash, keyBitsPerIndex: t.keys.map(\.entropyBits),
                                  valueBitsPerIndex: t.values.map(\.entropyBits))
                        })
        if json {
            print(try jsonString(info))
            return
        }
        print("dictionary   \(path)")
        print("content hash \(d.contentHash)")
        print("model        \(d.model.name) (\(d.model.architecture), \(d.model.layerCount) layers, \(d.model.kvHeads) KV heads of \(d.model.headDim))")
        print("fingerprint  \(d.model.fingerprint)")
        print("atoms        \(d.atomByteCount / 1024) KiB in memory (fp32) on a node that serves every layer (a worker makes only its layers' groups)")
        if let m = d.keyMetric {
            print(String(format: "key metric   query: RoPE pairs weighted by query energy per (layer, KV head), weights %.4f to %.2f (format 3)",
                         info.keyMetric.minWeight ?? 0, info.keyMetric.maxWeight ?? 0))
            print("             measured as \(m.source)")
        } else {
            print("key metric   l2 (plain squared error)")
        }
        for (name, part, g) in [("keys", d.keys, info.keyGroups), ("values", d.values, info.valueGroups)] {
            print("\n\(name): s_n = \(part.chunks) (\(d.model.headDim / part.chunks) channels per chunk), N = \(part.atomCount), \(g.count) groups")
            print("| layers | train MSE | test MSE |")
            print("|---|---:|---:|")
            for x in g {
                print("| \(x.layers) | \(x.trainMSE.map { String(format: "%.5f", $0) } ?? "-") | \(x.testMSE.map { String(format: "%.5f", $0) } ?? "-") |")
            }
        }
        if let t = info.tables {
            print("\nentropy tables (format 2, for ec=rans), hash \(t.hash.prefix(16))…")
            print("  counted with \(t.source)")
            print("  entropy of each group's table, bits per index (fixed width in brackets):")
            for (name, bits, part) in [("keys", t.keyBitsPerIndex, d.keys), ("values", t.valueBitsPerIndex, d.values)] {
                let fixed = Int(log2(Double(part.atomCount)).rounded(.up))
                let mean = bits.reduce(0, +) / Double(max(1, bits.count))
                print(String(format: "  %@ [%d]: mean %.2f, min %.2f, max %.2f", name, fixed, mean, bits.min() ?? 0, bits.max() ?? 0))
                print("    " + zip(part.groups, bits).map { String(format: "%d-%d: %.2f", $0.layers.lowerBound, $0.layers.upperBound - 1, $1) }
                    .joined(separator: ", "))
            }
        }
        if !d.training.isEmpty {
            print("\ntraining")
            for (k, v) in d.training.sorted(by: { $0.key < $1.key }) { print("  \(k): \(v)") }
        }
    }
}
