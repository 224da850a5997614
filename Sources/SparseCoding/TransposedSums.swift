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
