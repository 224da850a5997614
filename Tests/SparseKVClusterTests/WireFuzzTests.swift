import Foundation
import Testing
@testable import SparseKVCluster
import SparseKVEngine

/// Damaged and random input must give a ``WireError``, never a trap or another error.
@Suite struct WireFuzzTests {
    /// Decodes; true on success, false on a WireError; records an issue for any other error.
    func attempt(_ raw: UnsafeRawBufferPointer) -> Bool {
        do {
            _ = try WireProtocol.decode(raw)
            return true
        } catch is WireError {
            return false
        } catch {
            Issue.record("decode threw a non-WireError: \(error)")
            return false
        }
    }

    @Test func truncationAtEveryByte() throws {
        for m in try Samples.all() {
            var bytes = try m.encode()
            let full = bytes.count
            bytes.withUnsafeMutableBytes { raw in
                for n in 0..<full {
                    let cut = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                    // As received: the header still declares the full body.
                    do {
                        _ = try WireProtocol.decode(cut)
                        Issue.record("\(m.kind) cut at \(n) of \(full) decoded")
                    } catch is WireError {
                    } catch {
                        Issue.record("\(m.kind) cut at \(n) of \(full): \(error)")
                    }
                    // Body length patched to the cut: the body parser itself must notice.
                    if n >= WireProtocol.headerSize {
                        raw.storeBytes(of: UInt32(n - WireProtocol.headerSize).littleEndian, toByteOffset: 24, as: UInt32.self)
                        do {
                            _ = try WireProtocol.decode(cut)
                            Issue.record("\(m.kind) cut at \(n) of \(full) decoded")
                        } catch WireError.truncated(let kind, _) {
                            if kind != m.kind { Issue.record("\(m.kind) cut at \(n) reported as \(String(describing: kind))") }
                        } catch {
                            Issue.record("\(m.kind) cut at \(n) of \(full): \(error)")
                        }
                        raw.storeBytes(of: UInt32(full - WireProtocol.headerSize).littleEndian, toByteOffset: 24, as: UInt32.self)
                    }
                }
            }
        }
    }

    @Test func randomGarbage() {
        var g = SeededGenerator(seed: 2025)
        for i in 0..<5000 {
            let n = Int.random(in: 0...300, using: &g)
            var bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
            // Half the inputs get a valid header in front of a random body, so the body
            // parsers see the garbage rather than the magic check.
            if i % 2 == 0 {
                let kinds = MessageKind.allCases
                let kind = kinds[Int.random(in: 0..<kinds.count, using: &g)]
                bytes = Samples.raw(kind: kind.rawValue, flags: kind == .activations ? 1 : 0, requestID: UInt64(i),
                                    sessionID: kind.sessionRule == .none ? 0 : 1, body: bytes)
            }
            bytes.withUnsafeBytes { _ = attempt($0) }
        }
    }

    @Test func randomByteFlipsOfValidMessages() throws {
        var g = SeededGenerator(seed: 77)
        let samples = try Samples.all().map { try $0.encode() }
        var decoded = 0
        for i in 0..<20_000 {
            var bytes = samples[i % samples.count]
            for _ in 0..<Int.random(in: 1...4, using: &g) {
                // Mostly in the header and the first fields, where lengths and counts live.
                let limit = Int.random(in: 0...3, using: &g) == 0 ? bytes.count : min(bytes.count, 96)
                bytes[Int.random(in: 0..<limit, using: &g)] = UInt8.random(in: 0...255, using: &g)
            }
            if bytes.withUnsafeBytes({ attempt($0) }) { decoded += 1 }
        }
        // Flips in float payloads, nonces or ids leave valid messages: the loop did decode
        // some, so it exercised the whole decoder and not only the magic check.
        #expect(decoded > 0)
    }

    @Test func headerAloneNeverTraps() {
        var g = SeededGenerator(seed: 9)
        for _ in 0..<5000 {
            var bytes = (0..<WireProtocol.headerSize).map { _ in UInt8.random(in: 0...255, using: &g) }
            bytes.replaceSubrange(0..<4, with: [0x53, 0x4B, 0x56, 0x57])
            bytes.replaceSubrange(4..<6, with: [1, 0])
            bytes[24] |= 1  // a body is declared and none follows, so every one must fail
            bytes.withUnsafeBytes { raw in
                #expect(throws: WireError.self) { try WireProtocol.decodeHeader(raw) }
                return
            }
        }
    }
}
