import Testing

@testable import SparseCoding

@Suite struct ReservoirSamplerTests {
    /// Runs a sampler over 0..<n and returns the sample.
    private func sample(_ n: Int, capacity: Int, seed: UInt64) -> [Int] {
        var sampler = ReservoirSampler(capacity: capacity, seed: seed)
        var kept: [Int] = []
        for i in 0..<n {
            switch sampler.offer() {
            case .append: kept.append(i)
            case .replace(let slot): kept[slot] = i
            case .skip: break
            }
        }
        #expect(sampler.seen == n && sampler.count == min(n, capacity) && kept.count == min(n, capacity))
        return kept
    }

    @Test func shortStreamsAreKeptWholeInOrder() {
        #expect(sample(7, capacity: 10, seed: 3) == Array(0..<7))
        #expect(sample(10, capacity: 10, seed: 3) == Array(0..<10))
    }

    @Test func sampleHoldsDistinctItemsOfTheStream() {
        let kept = sample(10_000, capacity: 100, seed: 5)
        #expect(Set(kept).count == 100)
        #expect(kept.allSatisfy { (0..<10_000).contains($0) })
        // Not just the head of the stream: a uniform sample of 100 from 10,000 has items
        // past the first half with probability 1 - 2^-100.
        #expect(kept.contains { $0 >= 5_000 })
    }

    /// Every item is kept with probability capacity / n: over many seeded runs, the count
    /// of times each tenth of the stream is represented matches within 5 standard errors.
    @Test func everyPartOfTheStreamIsEquallyLikely() {
        let n = 1_000, capacity = 50, runs = 400
        var perTenth = [Int](repeating: 0, count: 10)
        for seed in 0..<runs {
            for i in sample(n, capacity: capacity, seed: UInt64(seed)) { perTenth[i * 10 / n] += 1 }
        }
        // Each tenth: expected runs * capacity / 10 = 2000 hits, variance below that mean.
        let expected = Double(runs * capacity) / 10
        for hits in perTenth { #expect(abs(Double(hits) - expected) < 5 * expected.squareRoot()) }
        // The first items are replaced like any other: the first tenth is not over-represented.
        #expect(Double(perTenth[0]) < expected * 1.2)
    }
}
