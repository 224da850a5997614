import ArgumentParser
import Foundation
import Logging
import SparseKVEngine

/// Where SparseKV keeps downloaded models and texts.
enum Paths {
    static var home: String {
        if let h = ProcessInfo.processInfo.environment["SPARSEKV_HOME"], !h.isEmpty { return h }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/sparsekv").path
    }
    static var defaultModel: String { home + "/models/SmolLM2-135M-Instruct.Q4_1.gguf" }
    static func text(_ name: String) -> String { home + "/texts/" + name }
}

/// Options every model-running command shares.
struct ModelOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "GGUF model file (default: $SPARSEKV_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf).")
    var model: String?

    @Option(name: .shortAndLong, help: "CPU threads (matrix products, attention, CSR coding).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(name: .shortAndLong, help: "Log loading details, OpenBLAS kernels and timings.")
    var verbose = false

    var modelPath: String { model ?? Paths.defaultModel }

    func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    }

    /// Configures logging and threads, then opens the model file.
    ///
    /// - Parameter openBLASThreads: nil (inference) runs OpenBLAS on one thread and splits
    ///   every batched product, attention unit and pursuit over the engine's own `--threads`
    ///   threads: OpenBLAS's pool, left running, spins on the cores between its calls and
    ///   leaves the engine's loops (softmax, dequantization, pursuit) on one thread.
    ///   Training passes `threads` for its large sgemms.
    func setUp(openBLASThreads: Int? = nil) throws -> (GGUFFile, Logger) {
        var logger = Logger(label: "sparsekv")
        logger.logLevel = verbose ? .debug : logLevelFromEnvironment()
        BLASRuntime.setThreads(openBLASThreads ?? 1)
        ComputeThreads.set(threads)
        logger.debug("OpenBLAS kernels: \(BLASRuntime.coreName), OpenBLAS threads: \(BLASRuntime.threads), engine threads: \(threads)")
        let path = modelPath
        if model == nil, !FileManager.default.fileExists(atPath: path) {
            throw CLIError.modelMissing(path)
        }
        return (try GGUFFile(path: path), logger)
    }
}

func logLevelFromEnvironment() -> Logger.Level {
    ProcessInfo.processInfo.environment["SPARSEKV_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
}

enum CLIError: Error, CustomStringConvertible {
    case modelMissing(String)
    case fileMissing(String)
    case dictionaryMissing(String, defaulted: Bool)

    var description: String {
        switch self {
        case .modelMissing(let p):
            return "no model at \(p). Run scripts/setup.sh to fetch SmolLM2-135M, or pass --model PATH."
        case .fileMissing(let p):
            return "cannot read \(p)."
        case .dictionaryMissing(let p, let defaulted):
            return "no CSR dictionary at \(p)." + (defaulted
                ? " Run scripts/setup.sh (installs the project's dictionary), make one with `sparsekv dict train`, or pass --dict PATH."
                : "")
        }
    }
}

/// `--dict`: the CSR dictionary a `csr:` cache codes against.
struct DictionaryOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "CSR dictionary (GGUF, from `sparsekv dict train`) for csr: caches.",
        discussion: "Default: $SPARSEKV_HOME/dicts/<model file name without .gguf>.csr.gguf."))
    var dict: String?

    static func defaultPath(model: String) -> String {
        let stem = URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent
        return Paths.home + "/dicts/" + stem + ".csr.gguf"
    }

    /// Loads the dictionary for `model` (checked against its fingerprint), once.
    func load(for model: LlamaModel, modelPath: String) throws -> CSRDictionary {
        let path = dict ?? Self.defaultPath(model: modelPath)
        guard FileManager.default.fileExists(atPath: path) else {
            throw CLIError.dictionaryMissing(path, defaulted: dict == nil)
        }
        let d = try CSRDictionary.load(path: path)
        try d.check(model: CSRDictionary.ModelInfo(model: model), path: path)
        return d
    }

    /// Turns `--kv` values into cache types, loading the dictionary only if one is a csr: cache.
    func cacheTypes(_ specs: [String], model: LlamaModel, modelPath: String) throws -> [KVCacheType] {
        var dictionary: CSRDictionary?
        return try specs.map { spec in
            if (try? KVCacheFormats.format(spec: spec))?.needsDictionary == true, dictionary == nil {
                dictionary = try load(for: model, modelPath: modelPath)
            }
            return try KVCacheType(parsing: spec, dictionary: dictionary)
        }
    }
}

/// Help text shared by every `--kv` option.
let kvHelp = ArgumentHelp(
    "KV cache: fp32, fp16, kivi2, kivi4, kivi8 or csr:S (CSR-S with --dict).",
    discussion: """
        csr: takes options after a comma: k=S, v=S (pairs per key vector / value chunk), coef=f16|i8|i6 (i4...i7: \
        coefficient bits when stored), alg=mp|omp, online=M, guard=F, guard-error=E, err=E, ec=gaps|rans (indices stored as gaps of sorted rows, or rANS; ec=gaps+coef also Huffman-codes the int8 coefficients and scales), recent=W (the W \
        latest tokens also in fp16), buffer=i8 (those W tokens in int8, one fp16 scale per head vector; i8g16: one per 16 channels), sink=N (the first N tokens in fp16), k@L=S or k@A-B=S (layer L's or layers A to \
        B's own key pairs; v@ likewise), e.g. csr:8, csr:4,coef=i8, or, token by \
        token near fp32 at 4.2 bits per channel (1,024 tokens), csr:16,coef=i6,alg=omp,recent=32,sink=4,ec=gaps. \
        See README "CSR: the sparse-coded KV cache".
        """)

/// Writes to stderr (progress, timings) without buffering surprises.
func printErr(_ s: String, terminator: String = "\n") {
    FileHandle.standardError.write((s + terminator).data(using: .utf8)!)
}

func readTextFile(_ path: String) throws -> String {
    guard let data = FileManager.default.contents(atPath: path) else { throw CLIError.fileMissing(path) }
    return String(decoding: data, as: UTF8.self)
}

func jsonString<T: Encodable>(_ value: T) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return String(decoding: try e.encode(value), as: UTF8.self)
}
