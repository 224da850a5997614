/// Query energy per RoPE pair, accumulated over the query heads that share each KV head:
/// the data of ``CSRKeyMetric``. Queries are taken after RoPE; a pair's energy
/// q_{2i}² + q_{2i+1}² does not depend on the rotation.
public struct QueryPairEnergy: Sendable, Equatable {
    public let layerCount: Int
    public let kvHeads: Int
    public let headDim: Int
    /// (layerCount, kvHeads, headDim / 2) sums of pair energies
    public private(set) var sums: [Double]
    /// [layer] query vectors added per KV head
    public private(set) var counts: [Int]

    public init(layerCount: Int, kvHeads: Int, headDim: Int) {
        self.layerCount = layerCount
        self.kvHeads = kvHeads
        self.headDim = headDim
        sums = [Double](repeating: 0, count: layerCount * kvHeads * headDim / 2)
        counts = [Int](repeating: 0, count: layerCount)
    }

    /// Adds `n` tokens' queries of `layer`, (n, heads * headDim), heads in GQA order
    /// (query head j reads KV head j / (heads / kvHeads)).
    public mutating func add(layer: Int, queries q: UnsafePointer<Float>, count n: Int, heads: Int) {
        let pairs = headDim / 2, group = heads / kvHeads
        for t in 0..<n {
            for j in 0..<heads {
                let row = q + (t * heads + j) * headDim, base = (layer * kvHeads + j / group) * pairs
                for i in 0..<pairs {
                    let a = Double(row[2 * i]), b = Double(row[2 * i + 1])
                    sums[base + i] += a * a + b * b
                }
            }
        }
        counts[layer] += n * group
    }

    /// E|q_i|² over the queries added for (layer, KV head), per pair (zeros when none).
    public func meanEnergy(layer: Int, kvHead h: Int) -> [Double] {
        let pairs = headDim / 2, base = (layer * kvHeads + h) * pairs, n = counts[layer]
        return (0..<pairs).map { n > 0 ? sums[base + $0] / Double(n) : 0 }
    }
}
