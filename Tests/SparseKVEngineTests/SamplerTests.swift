import Testing
@testable import SparseKVEngine

@Suite struct SamplerTests {
    let logits: [Float] = [0.1, 2.0, -1.0, 1.9, 0.5, 3.0, 2.9, -4.0]

    @Test func greedyTakesTheArgmax() {
        var s = Sampler(SamplingOptions(temperature: 0))
        #expect(s.sample(logits) == 5)
        #expect(Sampler.argmax([1, 3, 3, 2].withUnsafeBufferPointer { $0 }) == 1)
    }

    @Test func seededSamplingIsReproducible() {
        let opts = SamplingOptions(temperature: 1.0, topK: 0, topP: 1, seed: 42)
        var a = Sampler(opts), b = Sampler(opts)
        let xs = (0..<50).map { _ in a.sample(logits) }
        let ys = (0..<50).map { _ in b.sample(logits) }
        #expect(xs == ys)
        #expect(Set(xs).count > 2)
        var c = Sampler(SamplingOptions(temperature: 1.0, topK: 0, topP: 1, seed: 43))
        #expect((0..<50).map { _ in c.sample(logits) } != xs)
    }

    @Test func topKAndTopPCut() {
        var k1 = Sampler(SamplingOptions(temperature: 5, topK: 1, topP: 1, seed: 1))
        #expect((0..<20).allSatisfy { _ in k1.sample(logits) == 5 })
        var k2 = Sampler(SamplingOptions(temperature: 5, topK: 2, topP: 1, seed: 1))
        #expect(Set((0..<100).map { _ in k2.sample(logits) }) == [5, 6])
        var p = Sampler(SamplingOptions(temperature: 1, topK: 0, topP: 0.01, seed: 1))
        #expect((0..<20).allSatisfy { _ in p.sample(logits) == 5 })
    }

    @Test func frequenciesFollowTheDistribution() {
        // Two tokens with logits differing by ln(3): expect a 3:1 split.
        let l: [Float] = [Float(log(3.0)), 0, -30]
        var s = Sampler(SamplingOptions(temperature: 1, topK: 0, topP: 1, seed: 9))
        let n = 4000
        let first = (0..<n).filter { _ in s.sample(l) == 0 }.count
        #expect(abs(Double(first) / Double(n) - 0.75) < 0.03)
    }
}

import Foundation

@Suite struct BLASRuntimeTests {
    @Test func slowKernelsAreReplaced() {
        let avx512: Set<String> = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"]
        #expect(BLASRuntime.preferredCoreType(current: "Prescott", cpuFlags: avx512) == "SkylakeX")
        #expect(BLASRuntime.preferredCoreType(current: "Prescott", cpuFlags: ["avx", "avx2", "fma"]) == "Haswell")
        #expect(BLASRuntime.preferredCoreType(current: "Haswell", cpuFlags: avx512) == nil)
        #expect(BLASRuntime.preferredCoreType(current: "Zen", cpuFlags: ["avx2", "fma"]) == nil)
        #expect(BLASRuntime.preferredCoreType(current: "Prescott", cpuFlags: ["sse3"]) == nil)
    }
}
