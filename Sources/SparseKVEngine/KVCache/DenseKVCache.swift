/// Element types a dense cache can store: fp32 or fp16.
public protocol DenseKVElement: BitwiseCopyable, Sendable {
    static var kindName: String { get }
    init(_ v: Float)
    var floatValue: Float { get }
}

extension Float: DenseKVElement {
    public static var kindName: String { "fp32" }
    public var floatValue: Float { self }
}

extension Float16: DenseKVElement {
    public static var kindName: String { "fp16" }
    public var floatValue: Float { Float(self) }
}

/// Uncompressed KV cache, fp32 or fp16, one growing buffer per (layer, KV head).
///
/// By default keys are rotated when written, so an fp32 cache reads with no copy.
/// With `rotateOnRead` it keeps keys as the model produced them (pre-RoPE) and rotates
/// on every read, the way a sparse-coded cache must; both give the same attention.
public final class DenseKVCache<Element: DenseKVElement>: KVCache {
    public let geometry: KVCacheGeometry
    public let rope: RoPE
    public let rotateOnRead: Bool
    public var kind: String { Element.kindName }

    /// [(layer - first) * kvHeads + kvHead]: (count, headDim). One level of arrays, so
    /// appends mutate in place (nested arrays copied the whole buffer on every append).
    let keys: [GrowableBuffer<Element>]
    let values: [GrowableBuffer<Element>]
    var counts: [Int]
    /// fp32 copies handed out by reads that must convert or rotate: (count, headDim)
    private var keyScratch: [Float] = []
    private var valueScratch: [Float] = []

    public init(geometry: KVCacheGeometry, rope: RoPE, rotateOnRead: Bool = false) {
        self.geometry = geometry
        self.rope = rope
        self.rotateOnRead = rotateOnRead
        keys = (0..<geometry.layers.count * geometry.kvHeads).map { _ in GrowableBuffer() }
        values = (0..<geometry.layers.count * geometry.kvHeads).map { _ in GrowableBuffer() }
        counts = Array(repeating: 0, count: geometry.layers.count)
    }

    private func slot(_ layer: Int) throws -> Int {
        guard geometry.layers.contains(layer) else {
            throw KVCacheError.layerOutOfRange(layer: layer, layers: geometry.layers)
        }
        return layer - geometry.layers.lowerBound
    }

    public func count(layer: Int) -> Int {
        geometry.layers.contains(layer) ? counts[layer - geometry.layers.lowerBound] : 0
    }

    public func append(layer: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, count n: Int) throws {
        let s = try slot(layer)
        let start = counts[s], d = geometry.headDim, width = geometry.rowWidth
        guard start + n <= geometry.capacity else {
            throw KVCacheError.full(layer: layer, capacity: geometry.capacity, needed: start + n)
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: d) { row in
            let r = row.baseAddress!
            for h in 0..<geometry.kvHeads {
                let slot = s * geometry.kvHeads + h
                for t in 0..<n {
                    r.update(from: k + t * width + h * d, count: d)
                    if !rotateOnRead { rope.apply(r, heads: 1, position: start + t) }
                    keys[slot].append(r, count: d, Element.init)
                    values[slot].append(v + t * width + h * d, count: d, Element.init)
                }
            }
        }
        counts[s] = start + n
    }

    public func withKeysAndValues<R>(
        layer: Int, kvHead: Int,
        _ body: (UnsafePointer<Float>, UnsafePointer<Float>, Int) throws -> R
    ) rethrows -> R {
        let s = layer - geometry.layers.lowerBound
        let slot = s * geometry.kvHeads + kvHead
        let n = counts[s], d = geometry.headDim
        if Element.self == Float.self && !rotateOnRead {
            return try keys[slot].buffer.withMemoryRebound(to: Float.self) { kf in
                try values[slot].buffer.withMemoryRebound(to: Float.self) { vf in
                    try body(kf.baseAddress!, vf.baseAddress!, n)
                }
            }
        }
        if keyScratch.count < n * d {
            keyScratch = [Float](repeating: 0, count: n * d)
            valueScratch = keyScratch
        }
        let ks = keys[slot].buffer, vs = values[slot].buffer
        keyScratch.withUnsafeMutableBufferPointer { kd in
            valueScratch.withUnsafeMutableBufferPointer { vd in
                for i in 0..<n * d {
                    kd[i] = ks[i].floatValue
                    vd[i] = vs[i].floatValue
                }
                if rotateOnRead {
                    for t in 0..<n { rope.apply(kd.baseAddress! + t * d, heads: 1, position: t) }
                }
            }
        }
        return try keyScratch.withUnsafeBufferPointer { kb in
            try valueScratch.withUnsafeBufferPointer { vb in try body(kb.baseAddress!, vb.baseAddress!, n) }
        }
    }

    /// Keys and values of one KV head exactly as stored (pre-RoPE keys when
    /// `rotateOnRead`), as fp32: ((count, headDim), (count, headDim)).
    public func storedRows(layer: Int, kvHead: Int) -> (keys: [Float], values: [Float]) {
        guard geometry.layers.contains(layer), (0..<geometry.kvHeads).contains(kvHead) else { return ([], []) }
        let slot = (layer - geometry.layers.lowerBound) * geometry.kvHeads + kvHead
        return (keys[slot].buffer.map(\.floatValue), values[slot].buffer.map(\.floatValue))
    }

    /// One KV head's stored keys and values, (count, headDim) each, without a copy.
    func rows(layer: Int, kvHead: Int) -> (keys: UnsafeBufferPointer<Element>, values: UnsafeBufferPointer<Element>) {
        let slot = (layer - geometry.layers.lowerBound) * geometry.kvHeads + kvHead
        return (keys[slot].buffer, values[slot].buffer)
    }

    public func byteCount(layer: Int) -> Int {
        count(layer: layer) * geometry.rowWidth * 2 * MemoryLayout<Element>.size
    }

    public func truncate(to count: Int) {
        let d = geometry.headDim
        for s in counts.indices where counts[s] > count {
            for h in 0..<geometry.kvHeads {
                keys[s * geometry.kvHeads + h].removeLast((counts[s] - count) * d)
                values[s * geometry.kvHeads + h].removeLast((counts[s] - count) * d)
            }
            counts[s] = max(0, count)
        }
    }

    // MARK: - Transfer format

    public func serialize(layers: Range<Int>) throws -> [UInt8] {
        let n = try transferTokenCount(layers: layers)
        let header = KVPayloadHeader(
            kind: kind, layers: layers, kvHeads: geometry.kvHeads, headDim: geometry.headDim,
            tokenCount: n, keysRotated: !rotateOnRead)
        var w = BinaryWriter(capacity: 64 + layers.count * n * geometry.rowWidth * 2 * MemoryLayout<Element>.size)
        header.write(to: &w)
        for layer in layers {
            let s = layer - geometry.layers.lowerBound
            for h in 0..<geometry.kvHeads {
                w.write(raw: UnsafeRawBufferPointer(keys[s * geometry.kvHeads + h].buffer))
                w.write(raw: UnsafeRawBufferPointer(values[s * geometry.kvHeads + h].buffer))
            }
        }
        return w.bytes
    }

    /// Rebuilds a cache from `serialize` output. The payload must be of this element
    /// type; `capacity` must hold its tokens.
    public static func deserialize(_ bytes: [UInt8], capacity: Int, rope: RoPE) throws -> DenseKVCache {
        try bytes.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            let h = try KVPayloadHeader.read(from: &r)
            guard h.kind == Element.kindName else {
                throw KVCacheError.incompatiblePayload("payload is '\(h.kind)', this cache is '\(Element.kindName)'")
            }
            guard h.headDim == rope.headDim else {
                throw KVCacheError.incompatiblePayload("payload head dim \(h.headDim), model head dim \(rope.headDim)")
            }
            guard h.tokenCount <= capacity else {
                throw KVCacheError.full(layer: h.layers.lowerBound, capacity: capacity, needed: h.tokenCount)
            }
            let cache = DenseKVCache(
                geometry: KVCacheGeometry(layers: h.layers, kvHeads: h.kvHeads, headDim: h.headDim, capacity: capacity),
                rope: rope, rotateOnRead: !h.keysRotated)
            let perHead = h.tokenCount * h.headDim
            do {
                for s in 0..<h.layers.count {
                    for head in 0..<h.kvHeads {
                        cache.keys[s * h.kvHeads + head].append(contentsOf: try r.readArray(Element.self, count: perHead, "keys"))
                        cache.values[s * h.kvHeads + head].append(contentsOf: try r.readArray(Element.self, count: perHead, "values"))
                    }
                    cache.counts[s] = h.tokenCount
                }
            } catch let e as BinaryReader.OutOfBounds {
                throw KVCacheError.malformedPayload("truncated in \(e.what)")
            }
            guard r.remaining == 0 else { throw KVCacheError.malformedPayload("\(r.remaining) trailing bytes") }
            return cache
        }
    }
}
