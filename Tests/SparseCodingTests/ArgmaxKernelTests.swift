import Testing
@testable import SparseCoding

/// The pursuit's argmax kernels against a scalar scan: the first index of the largest
/// |value|, NaNs never chosen (0 when all are NaN), and axpyArgmaxAbs's y = y + a x bit
/// for bit as a scalar loop computes it; axpyArgmaxAbsPair as two single calls. Lengths
/// cover whole blocks of 16, a last block of 8, and tails of 1-7; ties are planted in the
/// same lane, in the two halves of a block, across blocks and in the tail.
@Suite struct ArgmaxKernelTests {
    static func reference(_ y: [Float]) -> Int {
        var best: Float = -1, index = 0
        for (i, v) in y.enumerated() where abs(v) > best {
            best = abs(v)
            index = i
        }
        return index
    }

    /// Vectors of length `n` with ties of the largest magnitude at `positions` (of either sign).
    static func vectors(_ n: Int, rng: inout Xoshiro256StarStar) -> [[Float]] {
        func random() -> [Float] { (0..<n).map { _ in rng.nextUnitFloat() * 2 - 1 } }
        var out = [random()]
        guard n > 1 else { return out }
        for pair in [(0, n - 1), (n / 2, n / 3), (n - 1, n - 2), (8, 0), (16, 24), (3, 3 + 16), (40, 8), (33, 1), (64 + 5, 32 + 13)] where pair.0 < n && pair.1 < n {
            var v = random()
            v[pair.0] = 5
            v[pair.1] = -5
            out.append(v)
        }
        var nan = random()
        nan[n / 2] = .nan
        out.append(nan)
        out.append([Float](repeating: .nan, count: n))
        out.append([Float](repeating: 0, count: n))
        return out
    }

    @Test func argmaxAbsIsTheFirstLargestMagnitude() {
        var rng = Xoshiro256StarStar(seed: 31)
        for n in Array(1...70) + [1024, 1031] {
            for v in Self.vectors(n, rng: &rng) {
                let got = v.withUnsafeBufferPointer { PursuitKernels.argmaxAbs($0.baseAddress!, n) }
                #expect(got == Self.reference(v), "n \(n): \(got) vs \(Self.reference(v))")
            }
        }
    }

    @Test func axpyArgmaxAbsUpdatesLikeAScalarLoopAndFindsTheFirstLargest() {
        var rng = Xoshiro256StarStar(seed: 32)
        for n in Array(1...70) + [1024, 1031] {
            for v in Self.vectors(n, rng: &rng) {
                let x = (0..<n).map { _ in rng.nextUnitFloat() * 2 - 1 }
                let a = rng.nextUnitFloat() * 2 - 1
                var expected = v
                for i in 0..<n { expected[i] += a * x[i] }
                var y = v
                let got = y.withUnsafeMutableBufferPointer { yp in
                    x.withUnsafeBufferPointer { PursuitKernels.axpyArgmaxAbs(yp.baseAddress!, a, $0.baseAddress!, n) }
                }
                #expect(y.map(\.bitPattern) == expected.map(\.bitPattern), "n \(n)")
                #expect(got == Self.reference(expected), "n \(n): \(got) vs \(Self.reference(expected))")
                // A zero step leaves y and finds its planted ties.
                var same = v
                let unchanged = same.withUnsafeMutableBufferPointer { yp in
                    x.withUnsafeBufferPointer { PursuitKernels.axpyArgmaxAbs(yp.baseAddress!, 0, $0.baseAddress!, n) }
                }
                #expect(unchanged == Self.reference(v), "n \(n), a = 0")
            }
        }
    }

    @Test func axpyArgmaxAbsPairIsTwoSingleCalls() {
        var rng = Xoshiro256StarStar(seed: 33)
        for n in Array(1...70) + [512, 1024, 1031] {
            let vs = Self.vectors(n, rng: &rng)
            for (k, v) in vs.enumerated() {
                let w = vs[(k + 1) % vs.count]
                let x = (0..<n).map { _ in rng.nextUnitFloat() * 2 - 1 }, u = (0..<n).map { _ in rng.nextUnitFloat() * 2 - 1 }
                let a = rng.nextUnitFloat() * 2 - 1, b = rng.nextUnitFloat() * 2 - 1
                var y1 = v, z1 = w, y2 = v, z2 = w
                let single = (y1.withUnsafeMutableBufferPointer { p in x.withUnsafeBufferPointer { PursuitKernels.axpyArgmaxAbs(p.baseAddress!, a, $0.baseAddress!, n) } },
                              z1.withUnsafeMutableBufferPointer { p in u.withUnsafeBufferPointer { PursuitKernels.axpyArgmaxAbs(p.baseAddress!, b, $0.baseAddress!, n) } })
                let pair = y2.withUnsafeMutableBufferPointer { yp in
                    z2.withUnsafeMutableBufferPointer { zp in
                        x.withUnsafeBufferPointer { xp in
                            u.withUnsafeBufferPointer { up in
                                PursuitKernels.axpyArgmaxAbsPair(yp.baseAddress!, a, xp.baseAddress!, zp.baseAddress!, b, up.baseAddress!, n)
                            }
                        }
                    }
                }
                #expect(pair == single, "n \(n)")
                #expect(y2.map(\.bitPattern) == y1.map(\.bitPattern) && z2.map(\.bitPattern) == z1.map(\.bitPattern), "n \(n)")
            }
        }
    }
}
