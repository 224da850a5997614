import Foundation

/// Why a CSR dictionary or cache operation failed.
public enum CSRError: LocalizedError, Sendable, Equatable {
    /// The file is not a dictionary, or a field is missing, out of range or inconsistent.
    case badDictionaryFile(path: String, reason: String)
    /// The file's atoms do not hash to the content hash it records.
    case corruptDictionary(path: String, recorded: String, computed: String)
    /// The dictionary was trained for another model.
    case modelMismatch(dictionary: String, dictionaryModel: String, model: String)
    /// A `--kv csr:...` specification that cannot be parsed or used.
    case badSettings(String)
    /// A CSR cache needs a dictionary and none was given.
    case dictionaryRequired
    /// A payload coded against another dictionary.
    case dictionaryHashMismatch(payload: String, local: String)

    public var errorDescription: String? {
        switch self {
        case .badDictionaryFile(let p, let r):
            return "\(p) is not a usable SparseKV dictionary: \(r). Make one with `sparsekv dict train`."
        case .corruptDictionary(let p, let rec, let comp):
            return "\(p) is corrupt: its atoms hash to \(comp.prefix(16))…, the file records \(rec.prefix(16))…. Train or copy it again."
        case .modelMismatch(let d, let dm, let m):
            return "dictionary \(d) was trained for model \(dm), not for the loaded model \(m). Train one for this model with `sparsekv dict train`."
        case .badSettings(let w):
            return "bad CSR settings: \(w)."
        case .dictionaryRequired:
            return "a CSR cache needs a dictionary: pass --dict PATH (made by `sparsekv dict train`)."
        case .dictionaryHashMismatch(let p, let l):
            return "KV payload was coded with dictionary \(p.prefix(16))…, this process holds \(l.prefix(16))…; refusing it."
        }
    }
}
