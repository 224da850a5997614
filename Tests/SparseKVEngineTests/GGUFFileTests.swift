import Foundation
import Testing
@testable import SparseKVEngine

// MARK: - Helpers

private func tempPath() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("sparsekv-gguf-\(UUID().uuidString).gguf").path
}

/// The case of a GGUFError, for asserting on errors whose payload is free text.
private func kind(_ e: GGUFError) -> String {
    switch e {
    case .cannotOpen: return "cannotOpen"
    case .badMagic: return "badMagic"
    case .unsupportedVersion: return "unsupportedVersion"
    case .truncated: return "truncated"
    case .malformed: return "malformed"
    case .unknownTensorType: return "unknownTensorType"
    case .tensorOutOfRange: return "tensorOutOfRange"
    case .missingKey: return "missingKey"
    case .wrongKeyType: return "wrongKeyType"
    case .missingTensor: return "missingTensor"
    case .badTensorShape: return "badTensorShape"
    }
}

/// Writes `bytes` to a temporary file, opens it, and returns what `GGUFFile` threw
/// (nil if it opened) with the path it was given. The file is removed.
private func openBytes(_ bytes: [UInt8]) -> (error: GGUFError?, path: String) {
    let path = tempPath()
    defer { try? FileManager.default.removeItem(atPath: path) }
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
        Issue.record("cannot create \(path)")
        return (nil, path)
    }
    do {
        _ = try GGUFFile(path: path)
        return (nil, path)
    } catch let e as GGUFError {
        return (e, path)
    } catch {
        Issue.record("unexpected error type: \(error)")
        return (nil, path)
    }
}

/// Expects `bytes` to be rejected with a `kind` error whose message names the file.
@discardableResult
private func expectRejected(_ bytes: [UInt8], as expected: String,
                            sourceLocation: SourceLocation = #_sourceLocation) -> GGUFError? {
    let (error, path) = openBytes(bytes)
    #expect(error.map(kind) == expected, "got \(String(describing: error))", sourceLocation: sourceLocation)
    #expect(error?.errorDescription?.contains(path) == true, sourceLocation: sourceLocation)
    return error
}

/// Position of the first occurrence of `needle`'s UTF-8 bytes.
private func find(_ needle: String, in bytes: [UInt8]) throws -> Int {
    let n = Array(needle.utf8)
    let hit = (0...(bytes.count - n.count)).first { Array(bytes[$0..<$0 + n.count]) == n }
    return try #require(hit, "'\(needle)' not found")
}

private func patch<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int, _ value: T) -> [UInt8] {
    var out = bytes
    withUnsafeBytes(of: value.littleEndian) { out.replaceSubrange(offset..<offset + $0.count, with: $0) }
    return out
}

/// A small valid file whose parts the rejection tests cut or corrupt.
///
/// Metadata: `general.architecture` (string), `k.u32` (u32), `k.bool` (bool),
/// `k.arr` (string array). Tensors: `tensor.alpha` F32 [8, 2], `tensor.beta` Q8_0 [32].
private func baseFile() throws -> [UInt8] {
    var w = GGUFWriter()
    w.set("general.architecture", .string("llama"))
    w.set("k.u32", .uint32(7))
    w.set("k.bool", .bool(true))
    w.set("k.arr", strings: ["x", "yz"])
    try w.addTensor(name: "tensor.alpha", shape: [8, 2], floats: (0..<16).map { Float($0) })
    try w.addTensor(name: "tensor.beta", shape: [32], floats: (0..<32).map { Float($0) / 8 }, as: .q8_0)
    return [UInt8](try w.data())
}

@Suite("GGUF writer and reader")
struct GGUFFileTests {
    // MARK: - Round trip

    @Test("Writer output reads back: every value kind, several tensor types, alignment")
    func roundTrip() throws {
        var rng = TestRandom(seed: 7)
        var w = GGUFWriter(alignment: 64)
        w.set("general.architecture", .string("llama"))
        w.set("v.u8", .uint8(200))
        w.set("v.i8", .int8(-5))
        w.set("v.u16", .uint16(60000))
        w.set("v.i16", .int16(-300))
        w.set("v.u32", .uint32(1))
        w.set("v.i32", .int32(-2_000_000_000))
        w.set("v.u64", .uint64(1 << 40))
        w.set("v.i64", .int64(-(1 << 40)))
        w.set("v.f32", .float32(1.5))
        w.set("v.f64", .float64(-2.25))
        w.set("v.true", .bool(true))
        w.set("v.false", .bool(false))
        w.set("v.string", .string("héllo, 世界 🙂"))
        w.set("v.strings", strings: ["a", "", "ß漢字"])
        w.set("v.ints", int32s: [-1, 0, 7])
        w.set("v.floats", floats: [0.5, -1.25])
        w.set("v.bools", .array(elementType: .bool, [.bool(true), .bool(false)]))
        w.set("v.u64s", .array(elementType: .uint64, [.uint64(.max), .uint64(0)]))
        w.set("v.empty", .array(elementType: .string, []))
        w.set("v.u32", .uint32(4_000_000_000))  // replaces in place, keeps its position

        let f32: [Float] = (0..<12).map { (i: Int) -> Float in Float(i) * 0.5 - 2 }
        let f16: [Float] = (0..<8).map { (i: Int) -> Float in Float(i) * 0.1 }
        let q8 = rng.floats(128, scale: 3)
        let q41 = rng.floats(32, scale: 0.2)
        let q40 = rng.floats(64, scale: 5)
        let q51 = rng.floats(32, scale: 1)
        var q6k = rng.bytes(GGMLType.q6_K.blockBytes)
        q6k.replaceSubrange(208..<210, with: [0x00, 0x3C])  // d = 1, so values are finite
        try w.addTensor(name: "t.f32", shape: [4, 3], floats: f32)
        try w.addTensor(name: "t.f16", shape: [8], floats: f16, as: .f16)
        try w.addTensor(name: "t.q8_0", shape: [64, 2], floats: q8, as: .q8_0)
        try w.addTensor(name: "t.q4_1", shape: [32], floats: q41, as: .q4_1)
        try w.addTensor(name: "t.q4_0", shape: [32, 1, 2], floats: q40, as: .q4_0)
        try w.addTensor(name: "t.q6_K", shape: [256], type: .q6_K, bytes: q6k)
        try w.addTensor(name: "t.q5_1", shape: [32, 1, 1, 1], floats: q51, as: .q5_1)

        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try w.write(to: path)
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == (try w.data()))

        let file = try GGUFFile(path: path)
        #expect(file.version == 3)
        #expect(file.metadataKeys == w.metadata.map(\.key))
        #expect(file.metadataKeys[6] == "v.u32")  // after general.alignment and the architecture
        for (key, value) in w.metadata {
            #expect(file.metadata[key] == value, "\(key)")
        }
        #expect(file.alignment == 64)
        #expect(try file.int("general.alignment") == 64)
        #expect(try file.string("v.string") == "héllo, 世界 🙂")
        #expect(try file.stringArray("v.strings") == ["a", "", "ß漢字"])
        #expect(try file.intArray("v.ints") == [-1, 0, 7])
        #expect(try file.floatArray("v.floats") == [0.5, -1.25])
        #expect(try file.int("v.u32") == 4_000_000_000)

        #expect(file.tensors.map(\.name) == w.tensors.map(\.name))
        #expect(file.dataOffset % 64 == 0)
        for (info, t) in zip(file.tensors, w.tensors) {
            #expect(info.shape == t.shape && info.type == t.type, "\(t.name)")
            #expect(info.fileOffset % 64 == 0, "\(t.name)")
            #expect(Array(file.rawData(info)) == t.bytes, "\(t.name)")
        }
        #expect(try file.floats("t.f32", shape: [4, 3]) == f32)
        #expect(try file.floats("t.f16") == f16.map { Float(Float16($0)) })
        let q8Back = try file.floats("t.q8_0")
        #expect(zip(q8Back, q8).allSatisfy { abs($0 - $1) <= 3.0 / 127 })
        #expect(try file.floats("t.q4_1").count == 32)
        #expect(try file.floats("t.q5_1").count == 32)
        #expect(try file.floats("t.q6_K").allSatisfy { $0.isFinite && abs($0) <= 128 * 32 })
    }

    @Test("Default alignment is 32 and is not written as metadata")
    func defaultAlignment() throws {
        var w = GGUFWriter()
        try w.addTensor(name: "a", shape: [32], floats: [Float](repeating: 1, count: 32), as: .q8_0)  // 34 bytes
        try w.addTensor(name: "b", shape: [3], floats: [1, 2, 3])
        let bytes = [UInt8](try w.data())
        #expect(bytes.count % 32 == 0)
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try w.write(to: path)
        let file = try GGUFFile(path: path)
        #expect(file.metadata["general.alignment"] == nil)
        #expect(file.alignment == 32)
        #expect(file.tensors[1].fileOffset - file.tensors[0].fileOffset == 64)
        #expect(try file.floats("b") == [1, 2, 3])
    }

    @Test("Writer rejects what a reader could not read")
    func writerErrors() throws {
        var w = GGUFWriter()
        try w.addTensor(name: "a", shape: [4], floats: [1, 2, 3, 4])
        #expect(throws: GGUFWriter.Error.duplicateTensor(name: "a")) {
            try w.addTensor(name: "a", shape: [4], floats: [1, 2, 3, 4])
        }
        #expect(throws: GGUFWriter.Error.byteCountMismatch(tensor: "b", type: .q8_0, expected: 34, found: 33)) {
            try w.addTensor(name: "b", shape: [32], type: .q8_0, bytes: [UInt8](repeating: 0, count: 33))
        }
        #expect(throws: GGUFWriter.Error.self) {
            try w.addTensor(name: "c", shape: [16], type: .q4_0, bytes: [UInt8](repeating: 0, count: 9))
        }
        #expect(throws: GGUFWriter.Error.self) {
            try w.addTensor(name: "d", shape: [1, 1, 1, 1, 1], type: .f32, bytes: [0, 0, 0, 0])
        }
        #expect(throws: GGUFWriter.Error.self) { try w.addTensor(name: "e", shape: [0], type: .f32, bytes: []) }
        #expect(throws: GGUFWriter.Error.unsupportedQuantization(tensor: "f", type: .q4_K)) {
            try w.addTensor(name: "f", shape: [256], floats: [Float](repeating: 0, count: 256), as: .q4_K)
        }
        #expect(w.tensors.count == 1)

        var mixed = GGUFWriter()
        mixed.set("m", .array(elementType: .int32, [.int32(1), .string("x")]))
        #expect(throws: GGUFWriter.Error.self) { try mixed.data() }
        var nested = GGUFWriter()
        nested.set("n", .array(elementType: .array, [.array(elementType: .int32, [])]))
        #expect(throws: GGUFWriter.Error.self) { try nested.data() }
        #expect(throws: GGUFWriter.Error.badAlignment(48)) { try GGUFWriter(alignment: 48).data() }
        #expect(throws: GGUFWriter.Error.self) { try GGUFWriter().write(to: "/nonexistent-dir-\(UUID())/x.gguf") }
    }

    // MARK: - Rejected files

    @Test func emptyFile() {
        expectRejected([], as: "truncated")
    }

    @Test func badMagic() throws {
        var bytes = try baseFile()
        bytes[3] = UInt8(ascii: "X")
        let e = expectRejected(bytes, as: "badMagic")
        if case .badMagic(_, let found) = e { #expect(found == 0x5855_4747) }
        expectRejected(Array("not a model at all, just text".utf8), as: "badMagic")
    }

    @Test("Versions 1 and 4 are refused", arguments: [UInt32(1), 4])
    func unsupportedVersion(version: UInt32) throws {
        let e = expectRejected(patch(try baseFile(), at: 4, version), as: "unsupportedVersion")
        if case .unsupportedVersion(_, let v) = e { #expect(v == version) }
    }

    @Test("Truncation in the header, metadata, tensor table and tensor data")
    func truncatedAtCutPoints() throws {
        let bytes = try baseFile()
        let u32Key = try find("k.u32", in: bytes)
        let alpha = try find("tensor.alpha", in: bytes)
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let good = try GGUFFile(path: path)
        let beta = try #require(good.tensorInfo("tensor.beta"))

        expectRejected(Array(bytes[..<6]), as: "truncated")                 // inside the version
        expectRejected(Array(bytes[..<20]), as: "truncated")                // inside the metadata count
        expectRejected(Array(bytes[..<(u32Key + 5 + 4 + 2)]), as: "truncated")  // inside k.u32's value
        expectRejected(Array(bytes[..<(alpha + 12 + 4 + 3)]), as: "truncated")  // inside alpha's first dimension
        expectRejected(Array(bytes[..<(alpha + 12 + 4 + 16 + 2)]), as: "truncated")  // inside alpha's type
        let inAlpha = expectRejected(Array(bytes[..<(good.dataOffset + 10)]), as: "tensorOutOfRange")
        #expect(inAlpha == .tensorOutOfRange(path: pathOf(inAlpha), tensor: "tensor.alpha"))
        let inBeta = expectRejected(Array(bytes[..<(beta.fileOffset + beta.byteCount - 1)]), as: "tensorOutOfRange")
        #expect(inBeta == .tensorOutOfRange(path: pathOf(inBeta), tensor: "tensor.beta"))
    }

    @Test("Every cut before the end of the last tensor is an error naming the file")
    func truncatedEverywhere() throws {
        let bytes = try baseFile()
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let good = try GGUFFile(path: path)
        let end = try #require(good.tensors.map { $0.fileOffset + $0.byteCount }.max())
        var accepted: [Int] = []
        var kinds = Set<String>()
        for cut in 0..<end {
            let (error, cutPath) = openBytes(Array(bytes[..<cut]))
            guard let error else { accepted.append(cut); continue }
            kinds.insert(kind(error))
            #expect(error.errorDescription?.contains(cutPath) == true, "cut at \(cut)")
        }
        #expect(accepted.isEmpty)
        // A count larger than what is left of the file reads as malformed, not truncated.
        #expect(kinds.isSubset(of: ["truncated", "malformed", "tensorOutOfRange"]))
        #expect(kinds.contains("truncated") && kinds.contains("tensorOutOfRange"))
    }

    @Test func unknownTensorType() throws {
        let bytes = try baseFile()
        let alpha = try find("tensor.alpha", in: bytes)
        let e = expectRejected(patch(bytes, at: alpha + 12 + 4 + 16, UInt32(99)), as: "unknownTensorType")
        #expect(e == .unknownTensorType(path: pathOf(e), tensor: "tensor.alpha", typeID: 99))
        #expect(e?.errorDescription?.contains("Q4_1") == true)  // lists what is supported
    }

    @Test func tensorOffsetBeyondEnd() throws {
        let bytes = try baseFile()
        let alpha = try find("tensor.alpha", in: bytes)
        let e = expectRejected(patch(bytes, at: alpha + 12 + 4 + 16 + 4, UInt64(1 << 20)), as: "tensorOutOfRange")
        #expect(e == .tensorOutOfRange(path: pathOf(e), tensor: "tensor.alpha"))
        // Large enough to overflow naive offset arithmetic.
        expectRejected(patch(bytes, at: alpha + 12 + 4 + 16 + 4, UInt64.max & ~31), as: "tensorOutOfRange")
    }

    @Test func nonAlignedOffset() throws {
        let bytes = try baseFile()
        let alpha = try find("tensor.alpha", in: bytes)
        let e = expectRejected(patch(bytes, at: alpha + 12 + 4 + 16 + 4, UInt64(8)), as: "malformed")
        #expect(e?.errorDescription?.contains("aligned") == true)
    }

    @Test("Absurd string lengths and array counts")
    func absurdLengths() throws {
        let bytes = try baseFile()
        expectRejected(patch(bytes, at: 24, UInt64(1) << 62), as: "malformed")  // first key's length
        let arr = try find("k.arr", in: bytes)
        expectRejected(patch(bytes, at: arr + 5 + 8, UInt64(1) << 40), as: "malformed")  // array count
        expectRejected(patch(bytes, at: arr + 5 + 8, UInt64.max), as: "malformed")
        expectRejected(patch(bytes, at: arr + 5 + 8 + 8, UInt64.max), as: "malformed")  // first element's length
        expectRejected(patch(bytes, at: 8, UInt64(1) << 50), as: "malformed")  // tensor count
        expectRejected(patch(bytes, at: 16, UInt64.max), as: "malformed")  // metadata count
    }

    @Test("Other malformed fields: value type, bool, dimensions, alignment")
    func otherMalformed() throws {
        let bytes = try baseFile()
        let u32Key = try find("k.u32", in: bytes)
        expectRejected(patch(bytes, at: u32Key + 5, UInt32(77)), as: "malformed")  // value type
        let boolKey = try find("k.bool", in: bytes)
        expectRejected(patch(bytes, at: boolKey + 6 + 4, UInt8(2)), as: "malformed")
        let arr = try find("k.arr", in: bytes)
        expectRejected(patch(bytes, at: arr + 5 + 4, UInt32(9)), as: "malformed")  // nested array
        let alpha = try find("tensor.alpha", in: bytes)
        expectRejected(patch(bytes, at: alpha + 12, UInt32(5)), as: "malformed")  // 5 dimensions
        expectRejected(patch(bytes, at: alpha + 12 + 4, UInt64(0)), as: "malformed")  // zero dimension
        let beta = try find("tensor.beta", in: bytes)
        expectRejected(patch(bytes, at: beta + 11 + 4, UInt64(16)), as: "malformed")  // row not whole Q8_0 blocks

        var w = GGUFWriter(alignment: 64)
        try w.addTensor(name: "a", shape: [2], floats: [1, 2])
        let aligned = [UInt8](try w.data())
        let key = try find("general.alignment", in: aligned)
        expectRejected(patch(aligned, at: key + 17 + 4, UInt32(48)), as: "malformed")
    }

    @Test func cannotOpen() {
        let missing = tempPath()
        #expect(throws: GGUFError.cannotOpen(path: missing, reason: "No such file or directory")) {
            try GGUFFile(path: missing)
        }
        let dir = FileManager.default.temporaryDirectory.path
        let e = #expect(throws: GGUFError.self) { try GGUFFile(path: dir) }
        #expect(e.map(kind) == "cannotOpen")
        #expect(e?.errorDescription?.contains(dir) == true)
    }
}

/// The path inside an error, to compare whole error values.
private func pathOf(_ e: GGUFError?) -> String {
    switch e {
    case .tensorOutOfRange(let p, _), .unknownTensorType(let p, _, _), .truncated(let p, _), .malformed(let p, _):
        return p
    default:
        return ""
    }
}
