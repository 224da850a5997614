import CBLAS
import Testing
@testable import SparseCoding

// MARK: - Construction

@Test func atomsAreNormalizedAndKeepTheirDirection() throws {
    let raw: [Float] = [3, 4, 0, 0.5, 0, -2]  // (3, 2)
    let d = try SparseDictionary(atoms: raw, atomCount: 3, dimension: 2)
    #expect(Array(d.atom(1)) == [0, 1])
    #expect(d.atoms.count == 6)
    #expect(abs(d.atoms[0] - 0.6) < 1e-7 && abs(d.atoms[1] - 0.8) < 1e-7)
    #expect(Array(d.atom(2)) == [0, -1])
}

@Test func zeroAtomIsRejectedWithItsIndex() {
    #expect(throws: SparseCodingError.zeroAtom(index: 1)) {
        try SparseDictionary(atoms: [1, 0, 0, 0, 0, 1], atomCount: 3, dimension: 2)
    }
}

@Test func wrongSizesAreRejected() {
    #expect(throws: SparseCodingError.badDictionaryShape(atomCount: 2, dimension: 3, elements: 5)) {
        try SparseDictionary(atoms: [1, 2, 3, 4, 5], atomCount: 2, dimension: 3)
    }
    #expect(throws: SparseCodingError.badDictionaryShape(atomCount: 0, dimension: 3, elements: 0)) {
        try SparseDictionary(atoms: [], atomCount: 0, dimension: 3)
    }
    #expect(throws: SparseCodingError.tooManyAtoms(atomCount: 65537, limit: 65536)) {
        try SparseDictionary(randomAtomCount: 65537, dimension: 1, seed: 0)
    }
}

@Test func nonFiniteAtomIsRejected() {
    #expect(throws: SparseCodingError.nonFiniteAtom(index: 0)) {
        try SparseDictionary(atoms: [.nan, 1], atomCount: 1, dimension: 2)
    }
    #expect(throws: SparseCodingError.nonFiniteAtom(index: 1)) {
        try SparseDictionary(atoms: [1, 0, .infinity, 1], atomCount: 2, dimension: 2)
    }
}

@Test func tinyAtomsAreNormalizedToo() throws {
    let subnormal = Float.leastNormalMagnitude / 16  // 2^-130
    let d = try SparseDictionary(atoms: [1e-30, 0, 3 * subnormal, 4 * subnormal], atomCount: 2, dimension: 2)
    #expect(d.atoms[0] == 1 && d.atoms[1] == 0)
    #expect(abs(d.atoms[2] - 0.6) < 1e-6 && abs(d.atoms[3] - 0.8) < 1e-6)
}

@Test func randomDictionaryIsReproducibleAndUnitNorm() throws {
    let a = try SparseDictionary(randomAtomCount: 100, dimension: 16, seed: 42)
    let b = try SparseDictionary(randomAtomCount: 100, dimension: 16, seed: 42)
    let c = try SparseDictionary(randomAtomCount: 100, dimension: 16, seed: 43)
    #expect(a.atoms == b.atoms)
    #expect(a.atoms != c.atoms)
    for n in 0..<a.atomCount {
        let norm = a.atom(n).reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
        #expect(abs(norm - 1) < 1e-6)
    }
}

// MARK: - Gram matrix

@Test func gramMatchesInnerProductsAndIsShared() throws {
    let d = try SparseDictionary(randomAtomCount: 50, dimension: 12, seed: 5)
    let g = try d.gram()
    #expect(g.count == 50 * 50)
    for i in 0..<50 {
        for j in 0..<50 {
            let dot = zip(d.atom(i), d.atom(j)).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            #expect(abs(Double(g[i * 50 + j]) - dot) < 1e-5)
        }
    }
    // A copy of the dictionary reuses the matrix instead of computing another.
    let copy = d
    let g2 = try copy.gram()
    g.withUnsafeBufferPointer { p in g2.withUnsafeBufferPointer { q in #expect(p.baseAddress == q.baseAddress) } }
}

/// A Gram matrix computed in blocks of rows on several threads (a prefill's transient
/// Gram) is the one-sgemm matrix bit for bit, for the project's key and value dictionary
/// shapes and for sizes that leave uneven blocks. With OpenBLAS on one thread, as the
/// engine runs it (`BLASRuntime`) and `scripts/run_tests.sh` sets it: OpenBLAS's own
/// threads split a product differently and change its last bits.
@Test(arguments: [(1024, 64), (512, 32), (200, 20), (70, 8), (63, 5)])
func gramInBlocksOfRowsIsTheWholeGram(atomCount: Int, dimension: Int) throws {
    openblas_set_num_threads(1)
    let d = try SparseDictionary(randomAtomCount: atomCount, dimension: dimension, seed: 6)
    let whole = try d.gram()
    for threads in [2, 3, 4] {
        var blocks = [Float](repeating: .nan, count: atomCount * atomCount)
        blocks.withUnsafeMutableBufferPointer {
            SparseDictionary.computeGram(d.atoms, atomCount, dimension, into: $0.baseAddress!, threads: threads)
        }
        #expect(blocks.map(\.bitPattern) == whole.map(\.bitPattern), "\(atomCount) atoms of \(dimension), \(threads) threads")
    }
}

// MARK: - Decoding

@Test func decodeSumsScaledAtoms() throws {
    let d = try SparseDictionary(atoms: [1, 0, 0, 0, 1, 0, 0, 0, 1], atomCount: 3, dimension: 3)
    let codes = try SparseCodes(count: 2, sparsity: 2, atomCount: 3, indices: [0, 2, 1, 1], coefficients: [2, -1, 0.5, 0.25])
    let decoded = try d.decode(codes)
    #expect(decoded == [2, 0, -1, 0, 0.75, 0])
}

@Test func decodeRejectsCodesOfAnotherDictionary() throws {
    let d = try SparseDictionary(randomAtomCount: 4, dimension: 3, seed: 1)
    let codes = try SparseCodes(count: 1, sparsity: 1, atomCount: 5, indices: [4], coefficients: [1])
    #expect(throws: SparseCodingError.dictionaryMismatch(codesAtomCount: 5, dictionaryAtomCount: 4)) { try d.decode(codes) }
}

@Test func codesRejectBadShapesAndIndices() {
    #expect(throws: SparseCodingError.badCodeShape(count: 2, sparsity: 2, indices: 3, coefficients: 4)) {
        try SparseCodes(count: 2, sparsity: 2, atomCount: 8, indices: [0, 1, 2], coefficients: [0, 0, 0, 0])
    }
    #expect(throws: SparseCodingError.indexOutOfRange(position: 1, index: 8, atomCount: 8)) {
        try SparseCodes(count: 1, sparsity: 2, atomCount: 8, indices: [7, 8], coefficients: [0, 0])
    }
}

// MARK: - Generator

@Test func generatorIsDeterministicAndRoughlyUniform() {
    var a = Xoshiro256StarStar(seed: 9), b = Xoshiro256StarStar(seed: 9)
    let xs = (0..<10_000).map { _ in a.nextUnitFloat() }
    #expect(xs == (0..<10_000).map { _ in b.nextUnitFloat() })
    #expect(xs.allSatisfy { $0 >= 0 && $0 < 1 })
    let mean = xs.reduce(0, +) / Float(xs.count)
    #expect(abs(mean - 0.5) < 0.02)
    var g = Xoshiro256StarStar(seed: 10)
    let gs = (0..<20_000).map { _ in Double(g.nextGaussian()) }
    let gm = gs.reduce(0, +) / Double(gs.count)
    let gv = gs.reduce(0) { $0 + ($1 - gm) * ($1 - gm) } / Double(gs.count)
    #expect(abs(gm) < 0.03 && abs(gv - 1) < 0.05)
}
