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

    @Option(name: .shortAndLong, help: "CPU threads for matrix products.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(name: .shortAndLong, help: "Log loading details, OpenBLAS kernels and timings.")
    var verbose = false

    var modelPath: String { model ?? Paths.defaultModel }

    func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    }

    /// Configures logging and BLAS, then opens the model file.
    func setUp() throws -> (GGUFFile, Logger) {
        var logger = Logger(label: "sparsekv")
        logger.logLevel = verbose ? .debug : logLevelFromEnvironment()
        BLASRuntime.setThreads(threads)
        logger.debug("OpenBLAS kernels: \(BLASRuntime.coreName), threads: \(BLASRuntime.threads)")
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

    var description: String {
        switch self {
        case .modelMissing(let p):
            return "no model at \(p). Run scripts/setup.sh to fetch SmolLM2-135M, or pass --model PATH."
        case .fileMissing(let p):
            return "cannot read \(p)."
        }
    }
}

extension KVCacheType: ExpressibleByArgument {
    public init?(argument: String) { try? self.init(parsing: argument) }
    public static var allValueStrings: [String] { ["fp32", "fp16", "kivi2", "kivi4", "kivi8"] }
}

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
