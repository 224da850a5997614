extension KVCache {
    /// This cache's contents for `layers` as a dense cache of `Element` would serialize
    /// them: every (layer, KV head) read back the way attention reads it (keys rotated,
    /// fp32) and stored as `Element`. It is the dense baseline of a KV transfer: what moving
    /// the same session costs without a compressed representation, decodable by
    /// ``DenseKVCache/deserialize(_:capacity:rope:)``.
    public func densePayload<Element: DenseKVElement>(layers: Range<Int>, as _: Element.Type) throws -> [UInt8] {
        let n = try transferTokenCount(layers: layers)
        let g = geometry
        let header = KVPayloadHeader(kind: Element.kindName, layers: layers, kvHeads: g.kvHeads, headDim: g.headDim,
                                     tokenCount: n, keysRotated: true)
        var w = BinaryWriter(capacity: 64 + layers.count * n * g.rowWidth * 2 * MemoryLayout<Element>.size)
        header.write(to: &w)
        var converted = [Element](repeating: Element(0), count: n * g.headDim)
        for layer in layers {
            for h in 0..<g.kvHeads {
                withKeysAndValues(layer: layer, kvHead: h) { keys, values, count in
                    for source in [keys, values] {
                        for i in 0..<count * g.headDim { converted[i] = Element(source[i]) }
                        converted.withUnsafeBytes { w.write(raw: UnsafeRawBufferPointer(rebasing: $0[0..<count * g.headDim * MemoryLayout<Element>.size])) }
                    }
                }
            }
        }
        return w.bytes
    }
}
