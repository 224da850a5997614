import CBLAS
import Foundation

// Steps 1 and 2 of layer grouping: subsample each layer, fit one PCA on all layers
// together, project every sampled vector onto its top two directions.

extension LayerGrouping {
    // MARK: - Subsampling

    /// The rows of each layer to use, ascending: all of them when a layer has at most
    /// `limit`, otherwise `limit` distinct rows drawn without replacement (partial
    /// Fisher-Yates). Each layer draws from its own generator, seeded from one master
    /// generator, so a layer's rows depend only on `seed`, its position and its count.
    static func sampleRows(counts: [Int], limit: Int, seed: UInt64) -> [[Int]] {
        var master = Xoshiro256StarStar(seed: seed)
        return counts.map { count in
            let layerSeed = master.next()
            guard count > limit else { return Array(0..<count) }
            var rng = Xoshiro256StarStar(seed: layerSeed)
            var rows = Array(0..<count)
            for i in 0..<limit {
                rows.swapAt(i, i + below(count - i, using: &rng))
            }
            return rows[0..<limit].sorted()
        }
    }

    /// A uniform integer in 0 ..< n (n >= 1) from the high half of a 64 x 64-bit product.
    /// Its bias (under n / 2^64) is irrelevant here, and unlike `Int.random(in:using:)` its
    /// algorithm is fixed, so the same seed picks the same rows with every toolchain.
    private static func below(_ n: Int, using rng: inout Xoshiro256StarStar) -> Int {
        Int(rng.next().multipliedFullWidth(by: UInt64(n)).high)
    }

    // MARK: - PCA

    /// The plane spanned by the top two principal directions of the pooled samples.
    struct PrincipalPlane: Sendable {
        /// m, the dimension of the vectors.
        let dimension: Int
        /// (m) mean of the pooled samples.
        let mean: [Double]
        /// (2, m) row-major: the first and second principal directions, unit length.
        let axes: [Double]
        /// (2) variance of the pooled samples along each axis.
        let variances: [Double]
        /// Total variance of the pooled samples (trace of the covariance).
        let totalVariance: Double

        /// Fraction of the total variance that lies in the plane (1 when there is none).
        var explainedVariance: Double {
            totalVariance > 0 ? min(1, max(0, (variances[0] + variances[1]) / totalVariance)) : 1
        }

        /// Coordinates of the chosen rows of `vectors` ((count, m) row-major) in the plane,
        /// relative to the mean: (rows.count, 2) row-major.
        func project(_ vectors: [Float], rows: [Int]) -> [Double] {
            let m = dimension
            let offsets = (0..<2).map { a in (0..<m).reduce(0.0) { $0 + mean[$1] * axes[a * m + $1] } }
            var out = [Double](repeating: 0, count: rows.count * 2)  // (n, 2)
            vectors.withUnsafeBufferPointer { x in
                axes.withUnsafeBufferPointer { u in
                    for (k, r) in rows.enumerated() {
                        var c0 = 0.0, c1 = 0.0
                        let row = r * m
                        for i in 0..<m {
                            let v = Double(x[row + i])
                            c0 += v * u[i]
                            c1 += v * u[m + i]
                        }
                        out[2 * k] = c0 - offsets[0]
                        out[2 * k + 1] = c1 - offsets[1]
                    }
                }
            }
            return out
        }
    }

    /// Rows gathered per dsyrk call while accumulating the covariance.
    private static let covarianceChunkRows = 1024

    /// Fits one PCA on the chosen rows of all layers: mean and covariance in Double (the
    /// covariance accumulated chunk by chunk with dsyrk on centered rows), then the
    /// eigenvectors of the m x m covariance by Jacobi rotations.
    static func principalPlane(layers: [[Float]], rows: [[Int]], dimension m: Int) -> PrincipalPlane {
        let total = rows.reduce(0) { $0 + $1.count }
        var mean = [Double](repeating: 0, count: m)  // (m)
        for (layer, picked) in zip(layers, rows) {
            for r in picked {
                for i in 0..<m { mean[i] += Double(layer[r * m + i]) }
            }
        }
        for i in 0..<m { mean[i] /= Double(max(1, total)) }

        var covariance = [Double](repeating: 0, count: m * m)  // (m, m), upper triangle filled by dsyrk
        var chunk = [Double](repeating: 0, count: covarianceChunkRows * m)  // (chunk, m) centered rows
        var filled = 0
        func flush() {
            guard filled > 0 else { return }
            chunk.withUnsafeBufferPointer { a in
                covariance.withUnsafeMutableBufferPointer { c in
                    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(m), Int32(filled),
                                1, a.baseAddress, Int32(m), 1, c.baseAddress, Int32(m))
                }
            }
            filled = 0
        }
        for (layer, picked) in zip(layers, rows) {
            for r in picked {
                for i in 0..<m { chunk[filled * m + i] = Double(layer[r * m + i]) - mean[i] }
                filled += 1
                if filled == covarianceChunkRows { flush() }
            }
        }
        flush()
        let scale = 1 / Double(max(1, total))
        for i in 0..<m {
            for j in i..<m {
                let v = covariance[i * m + j] * scale
                covariance[i * m + j] = v
                covariance[j * m + i] = v
            }
        }

        let (values, vectors) = symmetricEigen(covariance, dimension: m)
        var axes = Array(vectors[0..<(2 * m)])  // (2, m)
        // Eigenvectors have no sign of their own; make each axis's largest component
        // positive so that the plane is the same wherever it is computed.
        for a in 0..<2 {
            let row = axes[(a * m)..<((a + 1) * m)]
            if let top = row.indices.max(by: { abs(axes[$0]) < abs(axes[$1]) }), axes[top] < 0 {
                for i in row.indices { axes[i] = -axes[i] }
            }
        }
        let trace = (0..<m).reduce(0.0) { $0 + covariance[$1 * m + $1] }
        return PrincipalPlane(dimension: m, mean: mean, axes: axes,
                              variances: [max(0, values[0]), max(0, values[1])], totalVariance: trace)
    }

    /// Eigen-decomposition of a symmetric (n, n) row-major matrix by cyclic Jacobi
    /// rotations: accurate to rounding for any spectrum (repeated eigenvalues included),
    /// and cheap at the sizes used here (n = head dimension, 32 ... 256).
    ///
    /// - Returns: eigenvalues in decreasing order, and (n, n) row-major eigenvectors, row
    ///   k belonging to value k.
    static func symmetricEigen(_ matrix: [Double], dimension n: Int) -> (values: [Double], vectors: [Double]) {
        var a = matrix  // (n, n), driven to diagonal
        var v = [Double](repeating: 0, count: n * n)  // (n, n), columns become eigenvectors
        for i in 0..<n { v[i * n + i] = 1 }
        let scale = a.reduce(0.0) { $0 + $1 * $1 }
        for _ in 0..<100 {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<n { off += a[p * n + q] * a[p * n + q] } }
            // Converged when what is left off the diagonal is rounding noise.
            guard off > 1e-30 * scale, off > 0 else { break }
            for p in 0..<n {
                for q in (p + 1)..<n {
                    let apq = a[p * n + q]
                    guard apq != 0 else { continue }
                    // The rotation (c, s) that zeroes a[p, q] (the smaller of the two angles).
                    let theta = (a[q * n + q] - a[p * n + p]) / (2 * apq)
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {  // A <- A J
                        let akp = a[k * n + p], akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq
                        a[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {  // A <- J^T A
                        let apk = a[p * n + k], aqk = a[q * n + k]
                        a[p * n + k] = c * apk - s * aqk
                        a[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {  // V <- V J
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        let order = (0..<n).sorted { a[$0 * n + $0] > a[$1 * n + $1] }
        var vectors = [Double](repeating: 0, count: n * n)  // (n, n), row k = eigenvector k
        for (k, col) in order.enumerated() {
            for i in 0..<n { vectors[k * n + i] = v[i * n + col] }
        }
        return (order.map { a[$0 * n + $0] }, vectors)
    }
}
