import Dispatch
import Foundation
import Testing
@testable import SparseCoding

// Benchmarks, not tests: run with SPARSEKV_BENCH=1. They print medians over repeated runs
// and ratios against a baseline measured in the same invocation; nothing asserts on time.

private let benchEnabled = ProcessInfo.processInfo.environment["SPARSEKV_BENCH"] != nil

/// Seconds since some start: wall time, or the calling thread's CPU time (for one-thread
/// benchmarks, where it varies less than wall time on a shared machine).
private enum BenchClock {
    case wall, threadCPU

    var now: Double {
        switch self {
        case .wall:
            return Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
        case .threadCPU:
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
        }
    }
}

/// Median seconds of `runs` calls of `body` by `clock`, after one warm-up call.
private func medianSeconds(runs: Int, clock: BenchClock = .wall, _ body: () throws -> Void) rethrows -> Double {
    try body()
    var times: [Double] = []
    for _ in 0..<runs {
        let start = clock.now
        try body()
        times.append(clock.now - start)
    }
    return times.sorted()[times.count / 2]
}

/// One at a time: benchmarks that share two cores measure each other.
@Suite(.serialized, .enabled(if: benchEnabled))
struct EncoderBenchmarks {

@Test(arguments: [1024, 4096])
func encodeThroughput(atomCount n: Int) throws {
    let m = 64, s = 8, batch = 16_384
    let d = try SparseDictionary(randomAtomCount: n, dimension: m, seed: 1)
    var sig = Signals(seed: 2)
    let x = sig.gaussian(count: batch, dimension: m)
    _ = try d.gram()
    var baseline = 0.0
    print("[bench] OPENBLAS_NUM_THREADS=\(ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] ?? "unset")")
    for (algorithm, threads) in [(PursuitAlgorithm.matchingPursuit, 1), (.matchingPursuit, 2), (.orthogonal, 2)] {
        let enc = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s, algorithm: algorithm, threads: threads))
        let t = try medianSeconds(runs: 7) { _ = try enc.encode(x, count: batch) }
        let rate = Double(batch) / t
        if algorithm == .matchingPursuit && threads == 1 { baseline = rate }
        print(String(format: "[bench] encode m=%d N=%d s=%d B=%d %@ threads=%d: %.0f vectors/s (median of 7, %.1f ms), %.2fx vs MP 1 thread",
                     m, n, s, batch, algorithm.rawValue, threads, rate, t * 1e3, rate / baseline))
    }
    // The one sgemm per chunk alone, to show what the pursuit loops add.
    let gemmOnly = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: 1, threads: 2))
    let t1 = try medianSeconds(runs: 5) { _ = try gemmOnly.encode(x, count: batch) }
    print(String(format: "[bench] encode m=%d N=%d s=1 (correlation sgemm + one argmax) B=%d: %.0f vectors/s", m, n, batch, Double(batch) / t1))

    let codes = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s)).encode(x, count: batch)
    let td = medianSeconds(runs: 5) { _ = try? d.decode(codes) }
    let packed = try PackedCodes(codes)
    let tp = try medianSeconds(runs: 5) { _ = try PackedCodes(codes) }
    let tu = medianSeconds(runs: 5) { _ = packed.unpack() }
    print(String(format: "[bench] N=%d s=%d B=%d: decode %.0f vectors/s, pack fp16 %.0f vectors/s, unpack %.0f vectors/s, %d bytes (%.2f bits/channel)",
                 n, s, batch, Double(batch) / td, Double(batch) / tp, Double(batch) / tu, packed.byteCount,
                 Double(packed.payloadByteCount * 8) / Double(batch * m)))
}

/// Does OMP earn its keep? Reconstruction MSE at equal s, on data with no sparse structure
/// (Gaussian) and on data that is sparse plus noise.
@Test
func ompAgainstMP() throws {
    let m = 64, n = 1024, count = 4096
    let d = try SparseDictionary(randomAtomCount: n, dimension: m, seed: 3)
    var sig = Signals(seed: 4)
    let gaussian = sig.gaussian(count: count, dimension: m)
    var (structured, _) = sig.sparseSignals(count: count, sparsity: 6, dictionary: d, magnitudes: 0.3...2)
    let noise = sig.gaussian(count: count, dimension: m)
    for i in structured.indices { structured[i] += 0.05 * noise[i] }
    for (name, x) in [("gaussian", gaussian), ("6-sparse+noise", structured)] {
        let energy = meanSquaredError(x, [Float](repeating: 0, count: x.count))
        for s in [2, 4, 8, 16] {
            var line = "[bench] \(name) N=\(n) s=\(s):"
            var mse: [PursuitAlgorithm: Double] = [:]
            for algorithm in PursuitAlgorithm.allCases {
                let enc = try MatchingPursuitEncoder(dictionary: d, options: .init(sparsity: s, algorithm: algorithm))
                let codes = try enc.encode(x, count: count)
                mse[algorithm] = meanSquaredError(x, try d.decode(codes))
                let t = try medianSeconds(runs: 3) { _ = try enc.encode(x, count: count) }
                line += String(format: " %@ rel.MSE %.4f (%.0f vec/s);", algorithm.rawValue, (mse[algorithm] ?? 0) / energy, Double(count) / t)
            }
            line += String(format: " OMP/MP MSE ratio %.3f", (mse[.orthogonal] ?? 0) / (mse[.matchingPursuit] ?? 1))
            print(line)
        }
    }
}

/// A decoded token's coding as a decode step does it: per layer, three 64-float key rows
/// (s = 16, N = 1024) and six 32-float value chunks (s = 8, N = 512), each layer with
/// its own dictionaries, on one thread. Microseconds of CPU per token, 30 layers. The
/// calls take 1 row, 3 rows, or the decode step's units (`CSRCache.appendCodedTogether`
/// with two threads: keys 2 + 1 rows, values 3 + 3). `SPARSEKV_AVX512=0` measures the
/// portable correlation kernel on a CPU with AVX-512F.
@Test
func decodeTokenCoding() throws {
    let layers = 30
    var keyDicts: [SparseDictionary] = [], valueDicts: [SparseDictionary] = []
    for l in 0..<layers {
        keyDicts.append(try SparseDictionary(randomAtomCount: 1024, dimension: 64, seed: UInt64(10 + l)))
        valueDicts.append(try SparseDictionary(randomAtomCount: 512, dimension: 32, seed: UInt64(100 + l)))
    }
    var sig = Signals(seed: 5)
    let keys = sig.gaussian(count: 3 * layers, dimension: 64), values = sig.gaussian(count: 6 * layers, dimension: 32)
    for algorithm in [PursuitAlgorithm.orthogonal, .matchingPursuit] {
        let ke = try keyDicts.map { try MatchingPursuitEncoder(dictionary: $0, options: .init(sparsity: 16, algorithm: algorithm, threads: 1, keepsGram: false)) }
        let ve = try valueDicts.map { try MatchingPursuitEncoder(dictionary: $0, options: .init(sparsity: 8, algorithm: algorithm, threads: 1, keepsGram: false)) }
        var ki = [UInt16](repeating: 0, count: 3 * 16), kc = [Float](repeating: 0, count: 3 * 16)
        var vi = [UInt16](repeating: 0, count: 6 * 8), vc = [Float](repeating: 0, count: 6 * 8)
        // Rows per call, keys and values.
        for (label, keyCalls, valueCalls) in [("1 row per call", [1, 1, 1], [1, 1, 1, 1, 1, 1]),
                                              ("3 rows per call", [3], [3, 3]),
                                              ("decode units (keys 2 + 1, values 3 + 3)", [2, 1], [3, 3])] {
            let t = medianSeconds(runs: 21, clock: .threadCPU) {
                for l in 0..<layers {
                    keys.withUnsafeBufferPointer { k in
                        var r = 0
                        for rows in keyCalls {
                            ke[l].encode(count: rows, vectors: k.baseAddress! + (l * 3 + r) * 64, indices: &ki, coefficients: &kc)
                            r += rows
                        }
                    }
                    values.withUnsafeBufferPointer { v in
                        var r = 0
                        for rows in valueCalls {
                            ve[l].encode(count: rows, vectors: v.baseAddress! + (l * 6 + r) * 32, indices: &vi, coefficients: &vc)
                            r += rows
                        }
                    }
                }
            }
            print(String(format: "[bench] decode-token coding %@, %@: %.0f us CPU per token (30 layers, 1 thread, median of 21, %@)",
                         algorithm.rawValue, label, t * 1e6, PursuitKernels.usesAVX512 ? "AVX-512F" : "portable"))
        }
    }
}

/// The Gram-free pursuit's correlation kernel (the atoms in panels,
/// ``PursuitKernels/correlate(panels:atomCount:dimension:rows:rowCount:into:)``): one to
/// four rows per call (one: a chosen atom's Gram row in OMP; more: a lockstep's rows
/// sharing the reads), microseconds of CPU per row, one thread (wall time before the AVX-512F kernel). The row-major kernel it replaced
/// (``dots8`` per 8 atoms, then horizontal sums) measured 0.92, 9.26 and 3.13 µs per row
/// for these three shapes on the same machine.
@Test
func correlateLayouts() throws {
    for (n, m) in [(128, 64), (1024, 64), (512, 32)] {
        let d = try SparseDictionary(randomAtomCount: n, dimension: m, seed: 7)
        let panels = d.panels()
        let reps = 2000
        // Seconds per row, `rows` rows per call.
        func perRow(_ rows: Int) -> Double {
            var out = [Float](repeating: 0, count: rows * n)
            let t = d.atoms.withUnsafeBufferPointer { a in
                panels.withUnsafeBufferPointer { c in
                    out.withUnsafeMutableBufferPointer { o in
                        medianSeconds(runs: 9, clock: .threadCPU) {
                            for r in 0..<reps {
                                PursuitKernels.correlate(panels: c.baseAddress!, atomCount: n, dimension: m,
                                                         rows: a.baseAddress! + (r % (n - rows + 1)) * m, rowCount: rows,
                                                         into: o.baseAddress!)
                            }
                        }
                    }
                }
            }
            return t / Double(rows * reps)
        }
        let t = (1...4).map { perRow($0) * 1e6 }
        print(String(format: "[bench] correlate N=%d m=%d: %.2f / %.2f / %.2f / %.2f us CPU per row with 1 / 2 / 3 / 4 rows per call (medians of 9, %@)",
                     n, m, t[0], t[1], t[2], t[3], PursuitKernels.usesAVX512 ? "AVX-512F" : "portable"))
    }
}
}
