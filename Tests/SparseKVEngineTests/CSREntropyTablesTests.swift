import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// Entropy tables in the dictionary file: format 2, read back exactly, and the version check.
@Suite struct CSREntropyTablesTests {
    typealias F = CSRFixture

    func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("dict-\(UUID().uuidString).gguf").path
    }

    func sample() throws -> CSRDictionary {
        try F.dictionary(keys: SparseDictionary(randomAtomCount: 64, dimension: 16, seed: 1),
                         values: SparseDictionary(randomAtomCount: 32, dimension: 8, seed: 2), split: true)
    }

    func tables() throws -> CSREntropyTables {
        try CSREntropyTables(keyCounts: [(0..<65).map { 1000 / ($0 + 1) }, (0..<65).map { $0 % 5 }],
                             valueCounts: [(0..<33).map { $0 * $0 }, [Int](repeating: 3, count: 33)], source: "test counts")
    }

    /// The value of the file's `csr.version` (GGUF: key, u32 type, u32 value).
    func versionOffset(_ bytes: [UInt8]) -> Int? {
        let key = Array("csr.version".utf8)
        guard let i = (0...(bytes.count - key.count)).first(where: { Array(bytes[$0..<$0 + key.count]) == key }) else { return nil }
        return i + key.count + 4
    }

    @Test func tablesRoundTripInFormat2AndLeaveTheContentHashAlone() throws {
        let plain = try sample(), withTables = try plain.withEntropyTables(try tables())
        #expect(withTables.contentHash == plain.contentHash)
        for (d, version) in [(plain, 1), (withTables, 2)] {
            let bytes = [UInt8](try d.ggufData())
            let at = try #require(versionOffset(bytes))
            #expect(Int(bytes[at]) == version)
            let path = temporaryPath()
            defer { try? FileManager.default.removeItem(atPath: path) }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let e = try CSRDictionary.load(path: path)
            #expect(e.entropyTables == d.entropyTables && e.contentHash == d.contentHash)
        }
        // A table of the wrong size for its group is refused.
        let wrong = try CSREntropyTables(keyCounts: [[1, 2], [1, 2]], valueCounts: [[1], [1]], source: "")
        #expect(throws: CSRError.self) { try plain.withEntropyTables(wrong) }
    }

    @Test func aFileFromANewerFormatIsRefusedWithAClearError() throws {
        var bytes = [UInt8](try sample().withEntropyTables(try tables()).ggufData())
        let at = try #require(versionOffset(bytes))
        // The version after this build's (3 since the key metric).
        let next = CSRDictionary.formatVersion + 1
        bytes[at] = UInt8(next)
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            _ = try CSRDictionary.load(path: path)
            Issue.record("a format-\(next) file was accepted")
        } catch let e as CSRError {
            let text = e.localizedDescription
            #expect(text.contains("format version \(next)") && text.contains("versions 1 to \(next - 1)") && text.contains("update sparsekv"),
                    "\(text)")
        }
    }

    @Test func damagedTablesAreRefused() throws {
        let d = try sample().withEntropyTables(try tables())
        var bytes = [UInt8](try d.ggufData())
        // The first key table's first frequency (an int32 array after its key, type and
        // element type and count): moving one slot between symbols keeps the sum, so only
        // the recorded hash can tell.
        let key = Array("csr.tables.key.0".utf8)
        let i = try #require((0...(bytes.count - key.count)).first { Array(bytes[$0..<$0 + key.count]) == key })
        let first = i + key.count + 4 + 4 + 8
        bytes[first] &+= 1
        bytes[first + 4] &-= 1
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: CSRError.self) { try CSRDictionary.load(path: path) }
    }
}
