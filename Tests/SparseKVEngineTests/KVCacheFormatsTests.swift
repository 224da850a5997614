import Foundation
import SparseCoding
import Testing
@testable import SparseKVEngine

/// The format registry: one entry for every kind the factory makes, each decoding its
/// own transfers and append payloads and refusing the others'.
@Suite struct KVCacheFormatsTests {
    typealias F = CSRFixture

    /// Every `--kv` spec family the factory takes, with a CSR codec over the fixture dictionary.
    static let specs = ["fp32", "fp16", "kivi2", "kivi4", "kivi8", "csr:2"]

    /// A cache of `spec` holding 40 tokens, and its type (KIVI on a 32-wide head, the rest
    /// on the CSR fixture's shape).
    static func filled(_ spec: String, codec: CSRCodec) throws -> (KVCacheType, any KVCache, RoPE) {
        let type = try KVCacheType(parsing: spec, dictionary: codec.dictionary)
        let kivi = spec.hasPrefix("kivi")
        let g = kivi ? ReplicaTests.kiviGeometry : F.geometry, rope = kivi ? ReplicaTests.kiviRope : F.rope
        let cache = type.makeCache(geometry: g, rope: rope)
        try ReplicaTests.fill(cache, ReplicaTests.rows(40, g, seed: 71), ReplicaTests.rows(40, g, seed: 72), batch: 1)
        return (type, cache, rope)
    }

    @Test func everyKindTheFactoryMakesHasOneFormat() throws {
        let codec = try F.randomCodec(atoms: 40, seed: 73)
        var made: [String] = []
        for spec in Self.specs {
            let (type, cache, _) = try Self.filled(spec, codec: codec)
            let format = try KVCacheFormats.format(kind: cache.kind)
            #expect(format.kind == cache.kind && type.kind == cache.kind, "\(spec)")
            #expect(try KVCacheFormats.format(spec: spec).kind == cache.kind, "\(spec)")
            #expect(format.needsDictionary == (type.codec != nil), "\(spec)")
            #expect(format.supportsReplica && cache.acceptsAppendPayloads, "\(spec)")
            #expect(format.transferEncodings.first == cache.kind && format.transferEncodings.contains("fp16"), "\(spec)")
            made.append(cache.kind)
        }
        #expect(made == KVCacheFormats.all.map(\.kind), "the registry holds exactly the factory's kinds, once each")
        #expect(try KVCacheFormats.format(spec: "csr:8,coef=i8").kind == "csr", "a CSR spec names its kind without the dictionary")
    }

    /// Each format decodes its own kind's transfer and append payloads and no other's.
    @Test func eachFormatDecodesItsOwnPayloadsOnly() throws {
        let codec = try F.randomCodec(atoms: 40, seed: 74)
        let made = try Self.specs.map { try Self.filled($0, codec: codec) }
        for (type, cache, rope) in made {
            let format = try cache.format
            let payload = try cache.serialize(layers: 0..<2)
            let back = try format.deserialize(payload, capacity: cache.geometry.capacity, rope: rope, codec: type.codec)
            #expect(try back.serialize(layers: 0..<2) == payload, "\(cache.kind): a transfer decodes to the same cache")
            let append = try cache.appendPayload(layers: 0..<2, tokens: 38..<40)
            #expect(try format.checkAppendPayload(append, codec: type.codec) == (first: 38, tokens: 2), "\(cache.kind)")
            // The dense baseline every cache converts to, decoded by the fp16 format.
            let baseline = try cache.transferPayload(layers: 0..<2, encoding: KVCacheFormat.baselineEncoding)
            #expect(try KVCacheFormats.format(kind: "fp16").deserialize(baseline, capacity: cache.geometry.capacity, rope: rope).tokenCount == 40)
            if cache.kind != "fp32" {
                #expect(throws: KVCacheError.unsupportedEncoding(kind: cache.kind, encoding: "fp32", supported: format.transferEncodings)) {
                    try cache.transferPayload(layers: 0..<2, encoding: "fp32")
                }
            }
            for (_, other, otherRope) in made where other.kind != cache.kind {
                let f = try other.format
                #expect(throws: (any Error).self, "\(other.kind) decoding \(cache.kind)") {
                    try f.deserialize(payload, capacity: 256, rope: otherRope, codec: codec)
                }
                #expect(throws: (any Error).self, "\(other.kind) checking \(cache.kind)") { try f.checkAppendPayload(append, codec: codec) }
            }
        }
    }

    @Test func aDictionaryFormatNeedsTheCodec() throws {
        let codec = try F.randomCodec(atoms: 40, seed: 75)
        let (_, cache, rope) = try Self.filled("csr:2", codec: codec)
        let payload = try cache.serialize(layers: 0..<2)
        #expect(throws: CSRError.dictionaryRequired) { try CSRCache.format.deserialize(payload, capacity: 256, rope: rope) }
        #expect(throws: CSRError.self) {
            try CSRCache.format.deserialize(payload, capacity: 256, rope: rope, codec: try F.randomCodec(atoms: 40, seed: 76))
        }
    }

    @Test func anUnknownKindIsRefusedClearly() throws {
        #expect(throws: KVCacheError.unknownKind("kivi3")) { try KVCacheFormats.format(kind: "kivi3") }
        #expect(throws: KVCacheError.unknownKind("q8")) { try KVCacheFormats.format(spec: "q8") }
        let message = KVCacheError.unknownKind("kivi3").localizedDescription
        #expect(message.contains("'kivi3'") && message.contains("fp32, fp16, kivi2, kivi4, kivi8"), "\(message)")
        #expect(!KVCacheFormats.supportsReplica(kind: "kivi3") && !KVCacheFormats.needsDictionary(kind: "kivi3"))
        #expect(KVCacheFormats.supportsReplica(kind: "kivi4") && KVCacheFormats.needsDictionary(kind: "csr"))
    }
}
