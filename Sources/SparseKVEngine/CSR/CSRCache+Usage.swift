/// Atom usage, from which `sparsekv dict tables` builds the entropy tables.
extension CSRCache {
    /// How often each atom is used by the pairs this cache holds, per dictionary group:
    /// [group][N + 1], the last entry counting every use of an online atom. Groups of
    /// layers outside the cache count nothing.
    public func atomUsage() -> (keys: [[Int]], values: [[Int]]) {
        let dict = codec.dictionary
        var keys = dict.keys.groups.map { [Int](repeating: 0, count: $0.atomCount + 1) }
        var values = dict.values.groups.map { [Int](repeating: 0, count: $0.atomCount + 1) }
        for (s, layer) in geometry.layers.enumerated() {
            for (stream, group, isKey) in [(keyStreams[s], dict.keys.group(ofLayer: layer), true),
                                           (valueStreams[s], dict.values.group(ofLayer: layer), false)] {
                let n = stream.offline.atomCount
                for j in stream.usedIndices(0..<stream.rows) {
                    if isKey { keys[group][min(Int(j), n)] += 1 } else { values[group][min(Int(j), n)] += 1 }
                }
            }
        }
        return (keys, values)
    }
}
