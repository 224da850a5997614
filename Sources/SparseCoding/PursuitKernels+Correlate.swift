import CShims
import Foundation

/// The correlation kernel of the Gram-free pursuit: a vector's correlations with every
/// atom, or a chosen atom's Gram row, read from the atoms in panels.
///
/// The atoms are stored in panels of ``panelWidth`` (16) atoms, each panel channel by
/// channel: (ceil(N / 16), m, 16), the last panel padded with zero atoms
/// (``SparseDictionary/panels()``). The correlations of x with a panel are
/// sum_i x[i] P[i, :], a broadcast and two multiply-adds per channel: no horizontal sums,
/// and a panel is 4 KB (m = 64) read front to back.
///
/// The layout before it was plain columns, (m, N): a block of atoms then read one 64-byte
/// line from each of m rows N * 4 bytes apart, m streams that the prefetchers do not follow
/// and that share one L1 set when N * 4 is a multiple of 4 KB. Measured on one core
/// (`SPARSEKV_BENCH=1`, EncoderBenchmarks.correlateLayouts, same machine and session), µs per
/// row with 1 / 4 rows per call: N = 1024, m = 64 from 3.39 / 3.46 to 2.34 / 1.20 (2 rows
/// 1.28, 3 rows 1.46); N = 512, m = 32 from 0.82 / 0.56 to 0.60 / 0.31. A decoded token's
/// coding (`decodeTokenCoding`, 30 layers, one thread, three rows per call) went from 9.56
/// to 3.35 ms with MP (keys s = 16, values s = 8) and from 12.27 to 5.65 ms with OMP; the
/// pairs are the same bit for bit.
extension PursuitKernels {
    /// Atoms per panel of ``SparseDictionary/panels()``.
    static let panelWidth = 16

    /// Floats of the panel layout of N atoms of dimension m.
    static func panelFloats(atomCount n: Int, dimension m: Int) -> Int { (n + panelWidth - 1) / panelWidth * panelWidth * m }

    /// Offset of atom a's channel 0 in the panel layout; its channel i is `i * panelWidth` further.
    @inline(__always)
    static func panelOffset(atom a: Int, dimension m: Int) -> Int { a / panelWidth * panelWidth * m + a % panelWidth }

    /// out[r * n + a] = <atom a, rows[r]> for every row r < `rowCount` and atom a < n.
    ///
    /// Every entry is the same chain of fused multiply-adds over the channels in order,
    /// from zero, whichever panel, lane or group of rows it falls in (``panelDot``), so a
    /// row's result depends neither on the other rows nor on N.
    ///
    /// - Parameters:
    ///   - panels: ``SparseDictionary/panels()``.
    ///   - rows: (rowCount, m) row-major.
    ///   - out: (rowCount, N) row-major.
    static func correlate(panels: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                          rows: UnsafePointer<Float>, rowCount: Int, into out: UnsafeMutablePointer<Float>) {
        #if arch(x86_64)
        if usesAVX512 {
            sparsekv_correlate_avx512(panels, n, m, rows, rowCount, out)
            return
        }
        #endif
        correlatePortable(panels: panels, atomCount: n, dimension: m, rows: rows, rowCount: rowCount, into: out)
    }

    /// Whether ``correlate(panels:atomCount:dimension:rows:rowCount:into:)`` runs the
    /// AVX-512F kernel (CShims/correlate_avx512.h): when the CPU has it, unless
    /// `SPARSEKV_AVX512=0`. Both kernels give the same bits; measured with
    /// `EncoderBenchmarks` (README, "CSR coding on AVX-512").
    static let usesAVX512: Bool = {
        #if arch(x86_64)
        return sparsekv_cpu_has_avx512f() != 0 && ProcessInfo.processInfo.environment["SPARSEKV_AVX512"] != "0"
        #else
        return false
        #endif
    }()

    /// ``correlate(panels:atomCount:dimension:rows:rowCount:into:)`` in Swift SIMD (AVX2
    /// in the default build): every CPU's kernel, and the reference the AVX-512 one is
    /// tested against.
    static func correlatePortable(panels: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                                  rows: UnsafePointer<Float>, rowCount: Int, into out: UnsafeMutablePointer<Float>) {
        var r0 = 0
        while r0 < rowCount {
            let x = rows + r0 * m, o = out + r0 * n
            switch rowCount - r0 {
            case 1:
                correlateOne(panels: panels, atomCount: n, dimension: m, row: x, into: o)
                r0 += 1
            case 2:
                correlateTwo(panels: panels, atomCount: n, dimension: m, rows: x, into: o)
                r0 += 2
            case 3:
                correlateThree(panels: panels, atomCount: n, dimension: m, rows: x, into: o)
                r0 += 3
            default:
                correlateFour(panels: panels, atomCount: n, dimension: m, rows: x, into: o)
                r0 += 4
            }
        }
    }

    /// Stores a panel's 16 results for atoms a0 ..< a0 + 16 of a row, only those below n.
    @inline(__always)
    private static func store(_ lo: SIMD8<Float>, _ hi: SIMD8<Float>, _ out: UnsafeMutablePointer<Float>, _ a0: Int, _ n: Int) {
        if a0 + panelWidth <= n {
            let o = UnsafeMutableRawPointer(out + a0)
            o.storeBytes(of: lo, as: SIMD8<Float>.self)
            o.storeBytes(of: hi, toByteOffset: 32, as: SIMD8<Float>.self)
        } else {
            for j in 0..<min(8, n - a0) { out[a0 + j] = lo[j] }
            for j in 8..<max(8, n - a0) { out[a0 + j] = hi[j - 8] }
        }
    }

    /// One row, four panels at a time (eight independent chains keep both FMA ports busy),
    /// then the last panels one by one.
    private static func correlateOne(panels: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                                     row x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let d = UnsafeRawPointer(panels), panelBytes = panelWidth * m * 4, count = (n + panelWidth - 1) / panelWidth
        var p = 0
        while p + 4 <= count {
            let b0 = p * panelBytes, b1 = b0 + panelBytes, b2 = b1 + panelBytes, b3 = b2 + panelBytes
            var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), c2 = SIMD8<Float>(), c3 = SIMD8<Float>()
            var c4 = SIMD8<Float>(), c5 = SIMD8<Float>(), c6 = SIMD8<Float>(), c7 = SIMD8<Float>()
            for i in 0..<m {
                let v = SIMD8<Float>(repeating: x[i]), b = i * 64
                c0.addProduct(d.loadUnaligned(fromByteOffset: b0 + b, as: SIMD8<Float>.self), v)
                c1.addProduct(d.loadUnaligned(fromByteOffset: b0 + b + 32, as: SIMD8<Float>.self), v)
                c2.addProduct(d.loadUnaligned(fromByteOffset: b1 + b, as: SIMD8<Float>.self), v)
                c3.addProduct(d.loadUnaligned(fromByteOffset: b1 + b + 32, as: SIMD8<Float>.self), v)
                c4.addProduct(d.loadUnaligned(fromByteOffset: b2 + b, as: SIMD8<Float>.self), v)
                c5.addProduct(d.loadUnaligned(fromByteOffset: b2 + b + 32, as: SIMD8<Float>.self), v)
                c6.addProduct(d.loadUnaligned(fromByteOffset: b3 + b, as: SIMD8<Float>.self), v)
                c7.addProduct(d.loadUnaligned(fromByteOffset: b3 + b + 32, as: SIMD8<Float>.self), v)
            }
            let a0 = p * panelWidth
            store(c0, c1, out, a0, n)
            store(c2, c3, out, a0 + 16, n)
            store(c4, c5, out, a0 + 32, n)
            store(c6, c7, out, a0 + 48, n)
            p += 4
        }
        while p < count {
            let b0 = p * panelBytes
            var c0 = SIMD8<Float>(), c1 = SIMD8<Float>()
            for i in 0..<m {
                let v = SIMD8<Float>(repeating: x[i]), b = b0 + i * 64
                c0.addProduct(d.loadUnaligned(fromByteOffset: b, as: SIMD8<Float>.self), v)
                c1.addProduct(d.loadUnaligned(fromByteOffset: b + 32, as: SIMD8<Float>.self), v)
            }
            store(c0, c1, out, p * panelWidth, n)
            p += 1
        }
    }

    /// Two rows, two panels at a time, then the last panel: each panel's reads serve both rows.
    private static func correlateTwo(panels: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                                     rows: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let d = UnsafeRawPointer(panels), panelBytes = panelWidth * m * 4, count = (n + panelWidth - 1) / panelWidth
        let x0 = rows, x1 = rows + m
        var p = 0
        while p + 2 <= count {
            let b0 = p * panelBytes, b1 = b0 + panelBytes
            var c00 = SIMD8<Float>(), c01 = SIMD8<Float>(), c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
            var c02 = SIMD8<Float>(), c03 = SIMD8<Float>(), c12 = SIMD8<Float>(), c13 = SIMD8<Float>()
            for i in 0..<m {
                let v0 = SIMD8<Float>(repeating: x0[i]), v1 = SIMD8<Float>(repeating: x1[i]), b = i * 64
                let p0 = d.loadUnaligned(fromByteOffset: b0 + b, as: SIMD8<Float>.self)
                let p1 = d.loadUnaligned(fromByteOffset: b0 + b + 32, as: SIMD8<Float>.self)
                let p2 = d.loadUnaligned(fromByteOffset: b1 + b, as: SIMD8<Float>.self)
                let p3 = d.loadUnaligned(fromByteOffset: b1 + b + 32, as: SIMD8<Float>.self)
                c00.addProduct(p0, v0)
                c01.addProduct(p1, v0)
                c02.addProduct(p2, v0)
                c03.addProduct(p3, v0)
                c10.addProduct(p0, v1)
                c11.addProduct(p1, v1)
                c12.addProduct(p2, v1)
                c13.addProduct(p3, v1)
            }
            let a0 = p * panelWidth
            store(c00, c01, out, a0, n)
            store(c02, c03, out, a0 + 16, n)
            store(c10, c11, out + n, a0, n)
            store(c12, c13, out + n, a0 + 16, n)
            p += 2
        }
        if p < count {
            let b0 = p * panelBytes
            var c00 = SIMD8<Float>(), c01 = SIMD8<Float>(), c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
            for i in 0..<m {
                let v0 = SIMD8<Float>(repeating: x0[i]), v1 = SIMD8<Float>(repeating: x1[i]), b = b0 + i * 64
                let p0 = d.loadUnaligned(fromByteOffset: b, as: SIMD8<Float>.self)
                let p1 = d.loadUnaligned(fromByteOffset: b + 32, as: SIMD8<Float>.self)
                c00.addProduct(p0, v0)
                c01.addProduct(p1, v0)
                c10.addProduct(p0, v1)
                c11.addProduct(p1, v1)
            }
            store(c00, c01, out, p * panelWidth, n)
            store(c10, c11, out + n, p * panelWidth, n)
        }
    }

    /// Three or four rows (`rowCount`, a constant at each call, so the fourth row's work is
    /// compiled out for three), a panel at a time: six or eight chains.
    @inline(__always)
    private static func correlatePanels(rowCount: Int, panels: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                                        rows x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let d = UnsafeRawPointer(panels), panelBytes = panelWidth * m * 4, count = (n + panelWidth - 1) / panelWidth
        let four = rowCount == 4
        let x0 = x, x1 = x + m, x2 = x + 2 * m, x3 = x + (four ? 3 : 2) * m
        for p in 0..<count {
            let b0 = p * panelBytes
            var c00 = SIMD8<Float>(), c01 = SIMD8<Float>(), c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
            var c20 = SIMD8<Float>(), c21 = SIMD8<Float>(), c30 = SIMD8<Float>(), c31 = SIMD8<Float>()
            for i in 0..<m {
                let b = b0 + i * 64
                let lo = d.loadUnaligned(fromByteOffset: b, as: SIMD8<Float>.self)
                let hi = d.loadUnaligned(fromByteOffset: b + 32, as: SIMD8<Float>.self)
                let v0 = SIMD8<Float>(repeating: x0[i]), v1 = SIMD8<Float>(repeating: x1[i])
                let v2 = SIMD8<Float>(repeating: x2[i])
                c00.addProduct(lo, v0)
                c01.addProduct(hi, v0)
                c10.addProduct(lo, v1)
                c11.addProduct(hi, v1)
                c20.addProduct(lo, v2)
                c21.addProduct(hi, v2)
                if four {
                    let v3 = SIMD8<Float>(repeating: x3[i])
                    c30.addProduct(lo, v3)
                    c31.addProduct(hi, v3)
                }
            }
            let a0 = p * panelWidth
            store(c00, c01, out, a0, n)
            store(c10, c11, out + n, a0, n)
            store(c20, c21, out + 2 * n, a0, n)
            if four { store(c30, c31, out + 3 * n, a0, n) }
        }
    }

    private static func correlateThree(panels: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                                       rows: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        correlatePanels(rowCount: 3, panels: panels, atomCount: n, dimension: m, rows: rows, into: out)
    }

    private static func correlateFour(panels: UnsafePointer<Float>, atomCount n: Int, dimension m: Int,
                                      rows: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        correlatePanels(rowCount: 4, panels: panels, atomCount: n, dimension: m, rows: rows, into: out)
    }

    /// <x, atom a> as ``correlate(panels:atomCount:dimension:rows:rowCount:into:)`` computes
    /// it: fused multiply-adds over the channels in order, from zero.
    @inline(__always)
    static func panelDot(_ x: UnsafePointer<Float>, panels: UnsafePointer<Float>, atom a: Int, _ m: Int) -> Float {
        let y = panels + panelOffset(atom: a, dimension: m)
        var acc: Float = 0
        for i in 0..<m { acc.addProduct(y[i * panelWidth], x[i]) }
        return acc
    }
}
