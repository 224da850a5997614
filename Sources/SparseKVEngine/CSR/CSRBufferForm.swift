/// How a CSR cache's `recent=` buffer stores, counts and transfers its rows
/// (``CSRSettings/BufferFormat``).
///
/// - fp16: each value rounded to binary16.
/// - int8: each head vector (`headDim` channels), or each group of its channels with
///   `buffer=i8gN`, as q in -127...127 and one fp16 scale, s = peak / 127 rounded to fp16;
///   a value is q * s. A scale below fp16's smallest normal
///   number stores the vector as zeros (its peak is under 0.008).
///
/// The cache holds the stored values as fp32 for the attention kernel and codes a token
/// leaving the buffer from them. Storing them again gives the same values, bit for bit:
/// with a normal scale the peak's q is exactly ±127 (s is within 2^-11 of peak / 127), so
/// the stored peak is 127 s, its scale s again and every q again q. The wire form is
/// therefore made from the held values whenever it is asked for, and a replica that reads
/// it holds what the original holds.
struct CSRBufferForm {
    let format: CSRSettings.BufferFormat
    /// Channels per int8 scale: a head vector, or a group of its channels (`buffer=i8gN`).
    let scaleChannels: Int

    init(format: CSRSettings.BufferFormat, scaleChannels: Int) {
        self.format = format
        self.scaleChannels = scaleChannels
    }

    /// The form `settings` give rows of `headDim`-channel head vectors.
    init(_ settings: CSRSettings, headDim: Int) {
        self.init(format: settings.recentFormat, scaleChannels: settings.bufferGroup == 0 ? headDim : settings.bufferGroup)
    }

    /// Bytes one token's keys (or values) of `width` channels take when stored.
    func bytes(width: Int) -> Int {
        switch format {
        case .float16: width * 2
        case .int8: width + width / scaleChannels * 2
        }
    }

    /// `x` (whole head vectors) in its stored form.
    func stored(_ x: ArraySlice<Float>) -> [Float] {
        switch format {
        case .float16: x.map { Float(Float16($0)) }
        case .int8: values(quantized(x))
        }
    }

    /// Writes `x` (rows of whole head vectors, already in stored form): fp16 bits, or the
    /// fp16 scales of every head vector followed by their int8 values.
    func write(_ x: ArraySlice<Float>, to w: inout BinaryWriter) {
        switch format {
        case .float16:
            w.write(array: x.map { Float16($0).bitPattern })
        case .int8:
            let (scales, q) = quantized(x)
            w.write(array: scales)
            w.write(array: q)
        }
    }

    /// `x`'s head vectors as int8: the fp16 bits of each one's scale, and its q values.
    private func quantized(_ x: ArraySlice<Float>) -> (scales: [UInt16], q: [Int8]) {
        let d = scaleChannels
        var scales = [UInt16](repeating: 0, count: x.count / d), q = [Int8](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            for v in scales.indices {
                var peak: Float = 0
                for i in 0..<d { peak = max(peak, abs(xp[v * d + i])) }
                var scale = Float16(peak / 127)
                if !scale.isFinite { scale = .greatestFiniteMagnitude }
                guard scale >= .leastNormalMagnitude else { continue }  // stored as zeros
                let s = Float(scale)
                scales[v] = scale.bitPattern
                for i in 0..<d { q[v * d + i] = Int8(max(-127, min(127, (xp[v * d + i] / s).rounded()))) }
            }
        }
        return (scales, q)
    }

    /// The values of head vectors stored as (scales, q): q times its vector's scale.
    private func values(_ x: (scales: [UInt16], q: [Int8])) -> [Float] {
        x.q.indices.map { Float(x.q[$0]) * Float(Float16(bitPattern: x.scales[$0 / scaleChannels])) }
    }

    /// Reads what ``write(_:to:)`` wrote for `count` values, as their stored values.
    /// - Throws: `KVCacheError.malformedPayload` for a scale that is not a finite, non-negative
    ///   fp16 number or an int8 value of -128, and when the bytes run out.
    func read(_ r: inout BinaryReader, count: Int, _ what: String) throws -> [Float] {
        switch format {
        case .float16:
            return try r.readArray(UInt16.self, count: count, what).map { Float(Float16(bitPattern: $0)) }
        case .int8:
            let scales = try r.readArray(UInt16.self, count: count / scaleChannels, "\(what) scales")
            let q = try r.readArray(Int8.self, count: count, what)
            if let bad = scales.map({ Float16(bitPattern: $0) }).first(where: { !$0.isFinite || $0 < 0 || ($0 != 0 && $0 < .leastNormalMagnitude) }) {
                throw KVCacheError.malformedPayload("\(what): a buffer scale of \(bad)")
            }
            guard !q.contains(-128) else { throw KVCacheError.malformedPayload("\(what): an int8 value of -128") }
            return values((scales, q))
        }
    }
}
