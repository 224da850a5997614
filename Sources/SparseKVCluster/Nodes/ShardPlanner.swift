/// Splits a model's layers into contiguous shards, one per worker in registration order,
/// sized in proportion to the workers' memory budgets, and checks each budget.
public enum ShardPlanner {
    /// - Parameters:
    ///   - layerCount: layers of the model.
    ///   - budgets: each worker's memory budget in bytes, in pipeline order.
    ///   - bytesPerLayer: weights plus one session's cache at full capacity, per layer.
    ///   - fixedBytes: what every worker holds besides its layers (e.g. the dictionary).
    ///   - names: worker ids, for the error message.
    /// - Returns: one non-empty range per worker, covering 0..<layerCount in order.
    /// - Throws: ``NodeError/insufficientMemory(_:)`` naming the worker that cannot hold its share.
    public static func plan(layerCount: Int, budgets: [UInt64], bytesPerLayer: UInt64, fixedBytes: UInt64 = 0,
                            names: [String]? = nil) throws -> [Range<Int>] {
        let n = budgets.count
        guard n >= 1 else { throw NodeError.badConfiguration("no workers to plan for") }
        guard layerCount >= n else {
            throw NodeError.badConfiguration("\(n) workers for \(layerCount) layers; every worker needs at least one layer")
        }
        // Largest-remainder apportionment with at least one layer each.
        let total = budgets.reduce(0.0) { $0 + Double($1) }
        let spare = layerCount - n
        let exact = budgets.map { total > 0 ? Double($0) / total * Double(spare) : Double(spare) / Double(n) }
        var counts = exact.map { Int($0.rounded(.down)) }
        let order = exact.indices.sorted { (exact[$0] - Double(counts[$0]), -$0) > (exact[$1] - Double(counts[$1]), -$1) }
        for i in order.prefix(spare - counts.reduce(0, +)) { counts[i] += 1 }
        var ranges: [Range<Int>] = []
        var start = 0
        for (i, c) in counts.enumerated() {
            let r = start..<(start + c + 1)
            let need = UInt64(r.count) * bytesPerLayer + fixedBytes
            guard need <= budgets[i] else {
                let name = names?[i] ?? "worker \(i)"
                throw NodeError.insufficientMemory(
                    "\(name) has a memory budget of \(budgets[i]) bytes but its share, layers \(r.lowerBound)..<\(r.upperBound), needs \(need) bytes (weights + full-context cache\(fixedBytes > 0 ? " + dictionary" : "")); give it more --memory, add workers, or lower --ctx")
            }
            ranges.append(r)
            start = r.upperBound
        }
        return ranges
    }
}
