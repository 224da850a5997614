import Testing
@testable import SparseCoding

/// An encoder that does not keep the Gram matrix (serving) codes exactly as one that
/// does: small batches compute each chosen atom's Gram row when needed (the rows in
/// lockstep), large ones a Gram matrix for the call only. Dimension 20
/// takes the kernel's tail past the last 8 floats.
@Test(arguments: [32, 20]) func encoderWithoutAKeptGramGivesTheSameCodes(dimension: Int) throws {
    let d = try SparseDictionary(randomAtomCount: 512, dimension: dimension, seed: 21)
    var sig = Signals(seed: 22)
    // 1, 3, 5 rows: Gram rows on demand (5 * 6 < 512); 200 rows: a Gram matrix for the call.
    for count in [1, 3, 5, 200] {
        let x = sig.gaussian(count: count, dimension: dimension)
        for algorithm in PursuitAlgorithm.allCases {
            let kept = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 6, algorithm: algorithm))
                .encode(x, count: count)
            let free = try MatchingPursuitEncoder(
                dictionary: d, options: .init(sparsity: 6, algorithm: algorithm, keepsGram: false)).encode(x, count: count)
            #expect(free.indices == kept.indices, "\(algorithm), \(count) rows")
            let worst = zip(free.coefficients, kept.coefficients).map { abs($0 - $1) }.max() ?? 1
            #expect(worst < 1e-5, "\(algorithm), \(count) rows: \(worst)")
        }
    }
}


/// Small batches step their rows together (MP all of a chunk's, OMP four at a time); the
/// tracer codes the same rows one by one with the same Gram-row arithmetic, so the pairs
/// are bit for bit the same. Seven rows: OMP's groups of four and three; one and two
/// threads: chunks of seven, of four and three.
@Test(arguments: PursuitAlgorithm.allCases) func lockstepRowsCodeAsRowsOneByOne(algorithm: PursuitAlgorithm) throws {
    let d = try SparseDictionary(randomAtomCount: 256, dimension: 64, seed: 23)
    var sig = Signals(seed: 24)
    let x = sig.gaussian(count: 7, dimension: 64)
    for threads in [1, 2] {
        let encoder = try MatchingPursuitEncoder(
            dictionary: d, options: .init(sparsity: 8, algorithm: algorithm, threads: threads, keepsGram: false))
        let together = try encoder.encode(x, count: 7)
        let oneByOne = try encoder.trace(x, count: 7).codes
        #expect(together.indices == oneByOne.indices, "\(algorithm), \(threads) threads")
        #expect(together.coefficients == oneByOne.coefficients, "\(algorithm), \(threads) threads")
    }
}

/// The panel kernel gives every atom the same arithmetic wherever it falls (a group of
/// four panels, two or one, a padded last panel) and however many rows share the call
/// (one to four, in groups of four then the rest): bit for bit the reference chain of
/// fused multiply-adds, and within round-off of the dot products. Both kernels: the
/// portable one (Swift SIMD) and the one `correlate` runs on this CPU (AVX-512F where
/// the CPU has it, `PursuitKernels.usesAVX512`).
@Test(arguments: [(75, 64), (1030, 20), (8, 32), (5, 7), (64, 16), (1024, 64)]) func panelKernelMatchesItsReference(atomCount n: Int, dimension m: Int) throws {
    let d = try SparseDictionary(randomAtomCount: n, dimension: m, seed: 31)
    var sig = Signals(seed: 32)
    let x = sig.gaussian(count: 15, dimension: m)
    let panels = d.panels()
    #expect(panels.count == (n + 15) / 16 * 16 * m)
    for a in 0..<n { for i in 0..<m { #expect(panels[PursuitKernels.panelOffset(atom: a, dimension: m) + 16 * i] == d.atoms[a * m + i]) } }
    #expect(panels.array.filter { $0 != 0 }.count == d.atoms.filter { $0 != 0 }.count, "padding is zero")
    #expect(panels.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) % 64 } == 0, "panels start on a cache line")
    typealias Kernel = (UnsafePointer<Float>, Int, Int, UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>) -> Void
    let kernels: [(String, Kernel)] = [
        ("portable", { PursuitKernels.correlatePortable(panels: $0, atomCount: $1, dimension: $2, rows: $3, rowCount: $4, into: $5) }),
        (PursuitKernels.usesAVX512 ? "avx512" : "dispatched", {
            PursuitKernels.correlate(panels: $0, atomCount: $1, dimension: $2, rows: $3, rowCount: $4, into: $5)
        }),
    ]
    for (name, kernel) in kernels {
        // Sentinels one float past each row's n results catch a store past the last atom.
        var out = [Float](repeating: .nan, count: 15 * n + 1)
        // Calls of 1, 2, 3, 4 and 5 rows: every kernel, and a call of more than four rows.
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                var r0 = 0
                for rows in [1, 2, 3, 4, 5] {
                    panels.withUnsafeBufferPointer { kernel($0.baseAddress!, n, m, xp.baseAddress! + r0 * m, rows, op.baseAddress! + r0 * n) }
                    r0 += rows
                }
            }
        }
        #expect(out.dropLast().allSatisfy { !$0.isNaN }, "\(name)")
        #expect(out.last!.isNaN, "\(name): a store past the last row")
        for r in 0..<15 {
            for a in 0..<n {
                var chain: Float = 0
                var exact = 0.0
                for i in 0..<m {
                    chain.addProduct(d.atoms[a * m + i], x[r * m + i])
                    exact += Double(d.atoms[a * m + i]) * Double(x[r * m + i])
                }
                #expect(out[r * n + a] == chain, "\(name): row \(r), atom \(a)")
                #expect(abs(Double(out[r * n + a]) - exact) < 1e-5, "\(name): row \(r), atom \(a)")
                let dot = x.withUnsafeBufferPointer { xp in
                    panels.withUnsafeBufferPointer { PursuitKernels.panelDot(xp.baseAddress! + r * m, panels: $0.baseAddress!, atom: a, m) }
                }
                #expect(dot == chain, "row \(r), atom \(a)")
            }
        }
    }
}
