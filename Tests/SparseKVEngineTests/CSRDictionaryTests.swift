import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

@Suite struct CSRDictionaryTests {
    typealias F = CSRFixture

    func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("dict-\(UUID().uuidString).gguf").path
    }

    func sample() throws -> CSRDictionary {
        try F.dictionary(keys: SparseDictionary(randomAtomCount: 512, dimension: 16, seed: 1),
                         values: SparseDictionary(randomAtomCount: 32, dimension: 8, seed: 2), split: true)
    }

    /// `d` written to a temporary file and loaded back.
    func writtenAndLoaded(_ d: CSRDictionary) throws -> CSRDictionary {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try d.write(to: path)
        return try CSRDictionary.load(path: path)
    }

    @Test func fileRoundTripKeepsAtomsAndHash() throws {
        let d = try sample()
        let e = try writtenAndLoaded(d)
        #expect(e.contentHash == d.contentHash && e.contentHash.count == 64)
        #expect(e.keys.groups.map(\.layers) == [0..<1, 1..<2] && e.values.chunks == 2)
        #expect(e.keys.groups[1].dictionary.atoms == d.keys.groups[1].dictionary.atoms)
        #expect(e.training["note"] == "test" && e.model == d.model)
        // Other atoms, other identity.
        let other = try F.dictionary(keys: SparseDictionary(randomAtomCount: 32, dimension: 16, seed: 3),
                                     values: SparseDictionary(randomAtomCount: 32, dimension: 8, seed: 2), split: true)
        #expect(other.contentHash != d.contentHash)
    }

    /// A loaded dictionary makes a group's fp32 atoms on first use only (a worker pays for
    /// its own layers' groups), and they are the ones an eager load made.
    @Test func loadedGroupsMakeTheirDictionaryOnFirstUse() throws {
        let d = try sample()
        let e = try writtenAndLoaded(d)
        let madeAtLoad = (e.keys.groups + e.values.groups).filter(\.dictionaryIsMade).count
        #expect(madeAtLoad == 0)
        #expect(e.atomByteCount == d.atomByteCount && e.keys.atomCount == 512)
        // A cache over layer 1 makes the groups of layer 1 only.
        let codec = try CSRCodec(dictionary: e, settings: CSRSettings(keySparsity: 2, valueSparsity: 2))
        let geometry = KVCacheGeometry(layers: 1..<2, kvHeads: F.geometry.kvHeads, headDim: F.d, capacity: 16)
        let cache = CSRCache(geometry: geometry, rope: F.rope, codec: codec)
        let k = F.rows(4, seed: 5), v = F.rows(4, seed: 6)
        try cache.append(layer: 1, keys: k, values: v, count: 4)
        #expect(cache.tokenCount == 4)
        #expect(e.keys.groups.map(\.dictionaryIsMade) == [false, true])
        #expect(e.values.groups.map(\.dictionaryIsMade) == [false, true])
        #expect(e.keys.groups[1].dictionary.atoms == d.keys.groups[1].dictionary.atoms)
        #expect(e.keys.groups[0].dictionary.atoms == d.keys.groups[0].dictionary.atoms)
        #expect(e.keys.groups[0].dictionaryIsMade)
    }

    @Test func corruptFilesAreRejected() throws {
        let d = try sample()
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        var bytes = [UInt8](try d.ggufData())
        // Flip a bit in the last atom's data (tensor data ends the file).
        bytes[bytes.count - 3] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: CSRError.self) { try CSRDictionary.load(path: path) }
        do {
            _ = try CSRDictionary.load(path: path)
        } catch let e as CSRError {
            guard case .corruptDictionary = e else { Issue.record("expected corruptDictionary, got \(e)"); return }
        }
        try Data(bytes[0..<bytes.count / 2]).write(to: URL(fileURLWithPath: path))
        #expect(throws: CSRError.self) { try CSRDictionary.load(path: path) }
        // A model file is not a dictionary.
        let tiny = try TinyModel.write()
        defer { try? FileManager.default.removeItem(atPath: tiny) }
        #expect(throws: CSRError.self) { try CSRDictionary.load(path: tiny) }
    }

    @Test func dictionaryForAnotherModelIsRejected() throws {
        let tinyA = try TinyModel.write(seed: 1), tinyB = try TinyModel.write(seed: 2)
        defer { for p in [tinyA, tinyB] { try? FileManager.default.removeItem(atPath: p) } }
        let a = try LlamaModel(path: tinyA), b = try LlamaModel(path: tinyB)
        #expect(a.fingerprint != b.fingerprint)
        // Only K/V weights and the table count: a slice of the same file has the same fingerprint.
        #expect(try LlamaModel(path: tinyA, layers: 1..<2, embeddings: false, head: false).fingerprint == a.fingerprint)
        let info = CSRDictionary.ModelInfo(model: a)
        let m = info.headDim
        func part(_ chunks: Int) throws -> CSRDictionary.Part {
            .init(chunks: chunks, groups: [.init(layers: 0..<info.layerCount,
                                                  dictionary: try SparseDictionary(randomAtomCount: 16, dimension: m / chunks, seed: 4))])
        }
        let d = try CSRDictionary(model: info, keys: part(1), values: part(2))
        try d.check(model: info)
        #expect(throws: CSRError.self) { try d.check(model: CSRDictionary.ModelInfo(model: b)) }
    }

    @Test func tinyModelWithAnExactDictionaryMatchesFP32() throws {
        let path = try TinyModel.write()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let model = try LlamaModel(path: path)
        let info = CSRDictionary.ModelInfo(model: model)
        let m = info.headDim
        let basis = try F.basis(m), half = try F.basis(m / 2)
        let d = try CSRDictionary(
            model: info,
            keys: .init(chunks: 1, groups: [.init(layers: 0..<info.layerCount, dictionary: basis)]),
            values: .init(chunks: 2, groups: [.init(layers: 0..<info.layerCount, dictionary: half)]))
        let csr = try KVCacheType(parsing: "csr:k=\(m),v=\(m / 2)", dictionary: d)
        let tokens: [Int32] = [1, 5, 9, 33, 2, 7, 7, 40, 11, 3]
        func logits(_ t: KVCacheType) throws -> [Float] {
            let cache = model.makeCache(t, capacity: 32)
            var out: [Float] = []
            // Prompt in one batch, then token by token: later steps read earlier tokens from codes.
            var h = try model.embed(Array(tokens[0..<4]))
            try model.forward(&h, count: 4, cache: cache)
            for t in tokens[4...] {
                h = try model.embed([t])
                try model.forward(&h, count: 1, cache: cache)
                out += try model.logits(h, count: 1, rows: 0..<1)
            }
            return out
        }
        #expect(maxAbsDiff(try logits(.fp32), try logits(csr)) < 2e-2)
    }
}
