import Foundation

/// Settings of next-token sampling. Temperature 0 means greedy (argmax).
public struct SamplingOptions: Sendable, Equatable, Codable {
    public var temperature: Float = 0
    /// Keep the k most likely tokens; 0 keeps all.
    public var topK: Int = 40
    /// Keep the smallest set of tokens whose probability reaches p; 1 keeps all.
    public var topP: Float = 0.95
    public var seed: UInt64 = 0

    public init(temperature: Float = 0, topK: Int = 40, topP: Float = 0.95, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }
}

/// Picks the next token from logits: greedy, or temperature + top-k + top-p, seeded.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    private var rng: SeededGenerator

    public init(_ options: SamplingOptions) {
        self.options = options
        rng = SeededGenerator(seed: options.seed)
    }

    /// Index of the largest logit (the first one on ties, as llama.cpp's greedy sampler).
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        for i in 0..<logits.count where logits[i] > bestValue {
            best = i
            bestValue = logits[i]
        }
        return best
    }

    public mutating func sample(_ logits: [Float]) -> Int32 {
        logits.withUnsafeBufferPointer { sample($0) }
    }

    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        guard options.temperature > 0, logits.count > 1 else { return Int32(Self.argmax(logits)) }
        // Candidates sorted by logit, cut to top-k.
        var ids = Array(0..<logits.count)
        let k = options.topK > 0 ? min(options.topK, ids.count) : ids.count
        if k < ids.count {
            ids = Array(ids.partialSorted(k) { logits[$0] > logits[$1] })
        } else {
            ids.sort { logits[$0] > logits[$1] }
        }
        // Softmax with temperature over the candidates.
        let maxLogit = logits[ids[0]]
        var probs = ids.map { expf((logits[$0] - maxLogit) / options.temperature) }
        let sum = probs.reduce(0, +)
        for i in probs.indices { probs[i] /= sum }
        // Top-p: the shortest prefix whose mass reaches p.
        var keep = probs.count
        if options.topP < 1 {
            var acc: Float = 0
            for (i, p) in probs.enumerated() {
                acc += p
                if acc >= options.topP { keep = i + 1; break }
            }
        }
        let mass = probs[0..<keep].reduce(0, +)
        var r = Float.random(in: 0..<1, using: &rng) * mass
        for i in 0..<keep {
            r -= probs[i]
            if r < 0 { return Int32(ids[i]) }
        }
        return Int32(ids[keep - 1])
    }
}

extension Array {
    /// The k first elements in `areInIncreasingOrder` order (the rest discarded).
    func partialSorted(_ k: Int, by areInIncreasingOrder: (Element, Element) -> Bool) -> ArraySlice<Element> {
        // Keep a sorted buffer of the best k; fine for k in the tens and a vocab of 50k.
        var best: [Element] = []
        best.reserveCapacity(k + 1)
        for e in self {
            if best.count == k, let last = best.last, !areInIncreasingOrder(e, last) { continue }
            var lo = 0, hi = best.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if areInIncreasingOrder(e, best[mid]) { hi = mid } else { lo = mid + 1 }
            }
            best.insert(e, at: lo)
            if best.count > k { best.removeLast() }
        }
        return best[...]
    }
}
