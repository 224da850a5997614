import Crypto
import Foundation
import SparseCoding

/// Static frequency tables for entropy coding a CSR dictionary's atom indices: one per key
/// group and one per value group, over N + 1 symbols (the group's offline atoms, then one
/// escape symbol that stands for any online atom). Counted from the atoms MP picks on
/// calibration text (`sparsekv dict tables`); stored in the dictionary file (format 2).
///
/// The tables are not part of the dictionary's content hash (the atoms' identity): codes
/// made without entropy coding stay valid when tables are added. Entropy-coded payloads
/// carry the tables' own ``contentHash``.
public struct CSREntropyTables: Sendable, Equatable {
    /// [key group] N_keys + 1 symbols each.
    public let keys: [FrequencyTable]
    /// [value group] N_values + 1 symbols each.
    public let values: [FrequencyTable]
    /// How the counts were taken (settings, text, tokens), for `dict info`.
    public let source: String
    /// Hex SHA-256 of every frequency.
    public let contentHash: String

    public init(keys: [FrequencyTable], values: [FrequencyTable], source: String) {
        self.keys = keys
        self.values = values
        self.source = source
        var h = SHA256()
        for (name, part) in [("k", keys), ("v", values)] {
            h.update(data: Data("\(name) \(part.count)\u{0}".utf8))
            for t in part { t.frequencies.withUnsafeBytes { h.update(bufferPointer: $0) } }
        }
        contentHash = ModelFingerprint.hex(h.finalize())
    }

    /// Tables from atom usage counts, [group][N + 1], smoothed so every symbol can be coded.
    public init(keyCounts: [[Int]], valueCounts: [[Int]], source: String) throws {
        do {
            self.init(keys: try keyCounts.map { try FrequencyTable(counts: $0) },
                      values: try valueCounts.map { try FrequencyTable(counts: $0) }, source: source)
        } catch let e as EntropyCodingError {
            throw CSRError.badSettings(e.localizedDescription)
        }
    }

    /// Checks that there is a table of N + 1 symbols for every group of `keys` and `values`.
    func check(keys k: CSRDictionary.Part, values v: CSRDictionary.Part) -> String? {
        for (name, tables, part) in [("key", keys, k), ("value", values, v)] {
            guard tables.count == part.groups.count else { return "\(tables.count) \(name) tables for \(part.groups.count) groups" }
            if let bad = tables.firstIndex(where: { $0.symbolCount != part.atomCount + 1 }) {
                return "\(name) table \(bad) has \(tables[bad].symbolCount) symbols, the group \(part.atomCount) atoms + 1 escape"
            }
        }
        return nil
    }
}
