import ArgumentParser
import CZMQ
import Foundation
import SparseKVEngine

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show the runtime (OpenBLAS kernels, libzmq) and a model's metadata.")

    @Option(name: .shortAndLong, help: "GGUF file to describe (default: the default model, if present).")
    var model: String?

    func run() throws {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        print("OpenBLAS: \(BLASRuntime.coreName) kernels, \(BLASRuntime.threads) threads (\(BLASRuntime.config))")
        print("libzmq:   \(major).\(minor).\(patch), CURVE \(zmq_has("curve") != 0 ? "available" : "unavailable")")
        print("home:     \(Paths.home)")
        let path = model ?? Paths.defaultModel
        guard model != nil || FileManager.default.fileExists(atPath: path) else {
            print("model:    none at \(path) (run scripts/setup.sh)")
            return
        }
        let gguf = try GGUFFile(path: path)
        let config = try LlamaConfig(gguf: gguf)
        print("model:    \(path)")
        print("  GGUF v\(gguf.version), \(gguf.tensors.count) tensors, \(gguf.metadata.count) metadata keys")
        print("  \((try? gguf.string("general.name")) ?? "?"): \(config.layerCount) layers, d_model \(config.embeddingLength), "
              + "\(config.headCount) heads / \(config.kvHeadCount) KV heads of \(config.headDim), FFN \(config.feedForwardLength), "
              + "vocab \(config.vocabularySize), context \(config.contextLength), rope base \(config.ropeFreqBase)")
        var types: [String: Int] = [:]
        for t in gguf.tensors { types[t.type.description, default: 0] += 1 }
        print("  tensor types: " + types.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", "))
    }
}
