/// Dot products of `q` with eight consecutive rows, `rows + j * stride` for j < 8,
/// each `dim` floats; rows at or past `count` repeat row count - 1 and their lanes
/// are to be dropped. Each chunk of q is loaded once for the eight rows, and the eight
/// sums finish together (``transposedSums``). A row's product is the same whichever
/// lane it takes and whichever rows share the call.
@inlinable @inline(__always)
public func dots8(_ q: UnsafePointer<Float>, rows: UnsafePointer<Float>, stride: Int, count: Int,
                  dim: Int) -> SIMD8<Float> {
    let last = count - 1
    @inline(__always) func row(_ j: Int) -> UnsafeRawPointer { UnsafeRawPointer(rows + min(j, last) * stride) }
    let r0 = row(0), r1 = row(1), r2 = row(2), r3 = row(3), r4 = row(4), r5 = row(5), r6 = row(6), r7 = row(7)
    let qr = UnsafeRawPointer(q), wide = dim & ~7
    var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
    var s4 = SIMD8<Float>(), s5 = SIMD8<Float>(), s6 = SIMD8<Float>(), s7 = SIMD8<Float>()
    var c = 0
    while c < wide {
        let o = c * 4
        let v = qr.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
        s0.addProduct(r0.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
        s1.addProduct(r1.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
        s2.addProduct(r2.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
        s3.addProduct(r3.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
        s4.addProduct(r4.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
        s5.addProduct(r5.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
        s6.addProduct(r6.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
        s7.addProduct(r7.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self), v)
        c += 8
    }
    var sums = transposedSums(s0, s1, s2, s3, s4, s5, s6, s7)
    if wide < dim {
        var tail = SIMD8<Float>()
        for j in wide..<dim {
            let o = j * 4
            let t = SIMD8<Float>(r0.load(fromByteOffset: o, as: Float.self), r1.load(fromByteOffset: o, as: Float.self),
                                 r2.load(fromByteOffset: o, as: Float.self), r3.load(fromByteOffset: o, as: Float.self),
                                 r4.load(fromByteOffset: o, as: Float.self), r5.load(fromByteOffset: o, as: Float.self),
                                 r6.load(fromByteOffset: o, as: Float.self), r7.load(fromByteOffset: o, as: Float.self))
            tail.addProduct(t, SIMD8(repeating: q[j]))
        }
        sums += tail
    }
    return sums
}

/// Eight dot products finished at once: lane i of the result is the sum of the eight
/// lanes of s_i, always added in the same order ((l0 + l4) + (l1 + l5)) + ((l2 + l6) +
/// (l3 + l7)), so a sum does not depend on which other sums share the call. Three
/// rounds of lane-wise adds replace eight horizontal reductions, each a serial chain.
@inlinable @inline(__always)
public func transposedSums(_ s0: SIMD8<Float>, _ s1: SIMD8<Float>, _ s2: SIMD8<Float>, _ s3: SIMD8<Float>,
                           _ s4: SIMD8<Float>, _ s5: SIMD8<Float>, _ s6: SIMD8<Float>,
                           _ s7: SIMD8<Float>) -> SIMD8<Float> {
    // Fold halves: 4 partial sums per vector, two vectors per register.
    let p01 = SIMD8(lowHalf: s0.lowHalf + s0.highHalf, highHalf: s1.lowHalf + s1.highHalf)
    let p23 = SIMD8(lowHalf: s2.lowHalf + s2.highHalf, highHalf: s3.lowHalf + s3.highHalf)
    let p45 = SIMD8(lowHalf: s4.lowHalf + s4.highHalf, highHalf: s5.lowHalf + s5.highHalf)
    let p67 = SIMD8(lowHalf: s6.lowHalf + s6.highHalf, highHalf: s7.lowHalf + s7.highHalf)
    // Pairs: 2 partial sums per vector, four vectors per register.
    let q0123 = SIMD8(lowHalf: p01.evenHalf + p01.oddHalf, highHalf: p23.evenHalf + p23.oddHalf)
    let q4567 = SIMD8(lowHalf: p45.evenHalf + p45.oddHalf, highHalf: p67.evenHalf + p67.oddHalf)
    return SIMD8(lowHalf: q0123.evenHalf + q0123.oddHalf, highHalf: q4567.evenHalf + q4567.oddHalf)
}
