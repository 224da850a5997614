import Foundation
import SparseCoding

/// Keys (before RoPE) and values that a model produced over a text, per layer: the
/// training data of sparse-coding dictionaries.
///
/// Each layer's matrix holds one row per (token, KV head): (tokens * kvHeads, headDim),
/// row-major, tokens in order and heads within a token. The channel chunks of the CSR
/// method are contiguous, so the same buffer read as (rows * s_n, headDim / s_n) is the
/// data split into s_n chunks, with no copy.
public struct KVSamples: Sendable {
    public let layers: Range<Int>
    public let kvHeads: Int
    public let headDim: Int
    /// [layer - first]: (rows, headDim) pre-RoPE keys
    public var keys: [[Float]]
    /// [layer - first]: (rows, headDim) values
    public var values: [[Float]]
    /// The energy of the queries per RoPE pair over the same tokens (layer indices are
    /// the model's), for the query-aware key metric.
    public var queryEnergy: QueryPairEnergy

    /// Rows per layer (tokens * kvHeads).
    public var rowCount: Int { keys.first.map { $0.count / headDim } ?? 0 }

    /// Keys or values of `layer` as (rows * chunks, headDim / chunks).
    public func vectors(layer: Int, keys useKeys: Bool, chunks: Int) -> (data: [Float], dimension: Int)? {
        guard layers.contains(layer), chunks > 0, headDim % chunks == 0 else { return nil }
        let m = useKeys ? keys[layer - layers.lowerBound] : values[layer - layers.lowerBound]
        return (m, headDim / chunks)
    }
}

/// Runs a model over windows of a token sequence and keeps every layer's pre-RoPE keys
/// and values, and measures the queries' energy per RoPE pair.
///
/// With `keepRows` the collector streams: it holds at most that many rows per layer, a
/// uniform sample of every (token, KV head) row it saw (reservoir sampling; the same rows
/// in every layer, keys and values together), so memory stays fixed however much text it
/// reads. The query energy is a running mean over all tokens either way.
public enum KVSampleCollector {
    /// - Parameters:
    ///   - window: tokens per window; each window starts from an empty cache, as in perplexity runs
    ///   - maxWindows: stop after this many windows (all when nil)
    ///   - keepRows: the most rows kept per layer (all rows when nil); rows are then in
    ///     sample order, not token order
    ///   - seed: the reservoir's random seed
    ///   - progress: called with (windows done, windows in all)
    public static func collect(model: LlamaModel, tokens: [Int32], window: Int, maxWindows: Int? = nil,
                               keepRows: Int? = nil, seed: UInt64 = 1,
                               progress: (Int, Int) -> Void = { _, _ in }) throws -> KVSamples {
        let available = tokens.count / max(window, 1)
        let windows = min(available, maxWindows ?? available)
        guard window > 0, windows > 0 else {
            throw PerplexityError.textTooShort(tokens: tokens.count, contextLength: window)
        }
        let c = model.config, range = model.loadedLayers
        let totalRows = windows * window * c.kvHeadCount
        var reservoir = ReservoirSampler(capacity: max(1, min(keepRows ?? totalRows, totalRows)), seed: seed)
        var keys = [[Float]](repeating: [], count: range.count)
        var values = keys
        for l in keys.indices {
            keys[l].reserveCapacity(reservoir.capacity * c.headDim)
            values[l].reserveCapacity(reservoir.capacity * c.headDim)
        }
        let gen = TextGenerator(model: model, cacheType: .fp32, contextLength: window)
        var energy = QueryPairEnergy(layerCount: c.layerCount, kvHeads: c.kvHeadCount, headDim: c.headDim)
        for w in 0..<windows {
            let cache = DenseKVCache<Float>(geometry: model.cacheGeometry(capacity: window), rope: model.rope,
                                            rotateOnRead: true)
            let recorder = QueryRecordingCache(cache, energy: energy)
            _ = try gen.prefill(Array(tokens[w * window..<(w + 1) * window]), cache: recorder)
            energy = recorder.energy
            // Rows (t, h), heads interleaved per token: one placement per row for every layer.
            var placements: [ReservoirSampler.Placement] = []
            placements.reserveCapacity(window * c.kvHeadCount)
            for _ in 0..<window * c.kvHeadCount { placements.append(reservoir.offer()) }
            for layer in range {
                let perHead = (0..<c.kvHeadCount).map { cache.storedRows(layer: layer, kvHead: $0) }
                let i = layer - range.lowerBound
                for (r, placement) in placements.enumerated() {
                    let (t, h) = r.quotientAndRemainder(dividingBy: c.kvHeadCount)
                    let source = t * c.headDim..<(t + 1) * c.headDim
                    switch placement {
                    case .append:
                        keys[i] += perHead[h].keys[source]
                        values[i] += perHead[h].values[source]
                    case .replace(let slot):
                        let target = slot * c.headDim..<(slot + 1) * c.headDim
                        keys[i].replaceSubrange(target, with: perHead[h].keys[source])
                        values[i].replaceSubrange(target, with: perHead[h].values[source])
                    case .skip:
                        continue
                    }
                }
            }
            progress(w + 1, windows)
        }
        return KVSamples(layers: range, kvHeads: c.kvHeadCount, headDim: c.headDim, keys: keys, values: values,
                         queryEnergy: energy)
    }
}
