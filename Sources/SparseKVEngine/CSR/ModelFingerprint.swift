import Crypto
import Foundation

/// Identifies the model a dictionary was trained for. Dictionaries fit the K/V vectors of
/// one model's weights, so the fingerprint covers what determines them: the architecture
/// fields, the tensor table (names, types, shapes) and the raw bytes of every layer's K and
/// V projection. Any GGUF that holds the same weights gives the same value, whichever
/// layers a process loads.
public enum ModelFingerprint {
    /// Hex SHA-256 of the model's identifying parts.
    public static func compute(_ gguf: GGUFFile) -> String {
        var h = SHA256()
        func add(_ s: String) { h.update(data: Data((s + "\u{0}").utf8)) }
        let arch = (try? gguf.string("general.architecture")) ?? "?"
        add(arch)
        for key in ["block_count", "embedding_length", "attention.head_count", "attention.head_count_kv",
                    "rope.freq_base", "rope.dimension_count"] {
            add("\(key)=\(gguf.metadata["\(arch).\(key)"].map { "\($0)" } ?? "-")")
        }
        for t in gguf.tensors.sorted(by: { $0.name < $1.name }) {
            add("\(t.name):\(t.type):\(t.shape)")
        }
        for t in gguf.tensors.sorted(by: { $0.name < $1.name })
        where t.name.hasSuffix(".attn_k.weight") || t.name.hasSuffix(".attn_v.weight") {
            h.update(bufferPointer: gguf.rawData(t))
        }
        return hex(h.finalize())
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}
