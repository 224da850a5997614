import Dispatch
import Foundation
import Testing
@testable import SparseCoding

// Benchmarks, not tests: run with SPARSEKV_BENCH=1. They print medians and ratios against a
// baseline measured in the same invocation; nothing asserts on time.

private let benchEnabled = ProcessInfo.processInfo.environment["SPARSEKV_BENCH"] != nil

/// `count` vectors of dimension m that are 8-sparse over a hidden random dictionary of `n`
/// atoms, plus noise: the cost of a step hardly depends on the data, its result does.
private func sparseData(count: Int, atomCount n: Int, dimension m: Int) throws -> [Float] {
    let hidden = try SparseDictionary(randomAtomCount: n, dimension: m, seed: 1)
    var sig = Signals(seed: 2)
    var (x, _) = sig.sparseSignals(count: count, sparsity: min(8, m / 4), dictionary: hidden, magnitudes: 0.5...2)
    for i in x.indices { x[i] += 0.01 * sig.rng.nextGaussian() }
    return x
}

/// One at a time: benchmarks that share two cores measure each other.
@Suite(.serialized, .enabled(if: benchEnabled))
struct NeuralDictBenchmarks {

/// Time per optimisation step (minibatch MP, gradient, diversity sgemm, Adam, renormalise)
/// and per k-means iteration, from the progress callback's timestamps. The last step, which
/// also evaluates the held-out set, is left out.
@Test(arguments: [(1024, 64, 8), (4096, 64, 8), (4096, 32, 4)])
func stepThroughput(_ shape: (atomCount: Int, dimension: Int, sparsity: Int)) throws {
    let n = shape.atomCount, m = shape.dimension, s = shape.sparsity, count = 150_000
    let x = try sparseData(count: count, atomCount: n, dimension: m)
    var baseline = 0.0
    print("[bench] OPENBLAS_NUM_THREADS=\(ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] ?? "unset")")
    for threads in [1, 2] {
        let options = NeuralDictOptions(atomCount: n, sparsity: s, steps: 41, batchSize: 2048, kmeansIterations: 3,
                                        evaluateEvery: 1000, threads: threads)
        var stamps: [(NeuralDictProgress.Phase, UInt64)] = []
        _ = try NeuralDictTrainer.train(vectors: x, count: count, dimension: m, options: options) { p in
            if p.step < 41 { stamps.append((p.phase, DispatchTime.now().uptimeNanoseconds)) }
        }
        func median(_ phase: (NeuralDictProgress.Phase) -> Bool) -> Double {
            let times = zip(stamps, stamps.dropFirst()).filter { phase($0.1.0) && phase($0.0.0) }
                .map { Double($0.1.1 - $0.0.1) * 1e-9 }.sorted()
            return times.isEmpty ? .nan : times[times.count / 2]
        }
        let step = median { $0 == .training }
        let lloyd = median { $0 != .training }
        if threads == 1 { baseline = step }
        print(String(format: "[bench] NeuralDict N=%d m=%d s=%d B=2048 threads=%d: %.1f steps/s (median %.1f ms, %.2fx vs 1 thread); "
                     + "k-means %.0f ms per Lloyd iteration on %d vectors",
                     n, m, s, threads, 1 / step, step * 1e3, baseline / step, lloyd * 1e3, min(count * 9 / 10, 131_072)))
    }
}

/// A whole training with the default options, as the CLI would run it for one layer group.
@Test func defaultTraining() throws {
    let n = 1024, m = 64, s = 8, count = 200_000
    let x = try sparseData(count: count, atomCount: n, dimension: m)
    let options = NeuralDictOptions(atomCount: n, sparsity: s)
    let (_, r) = try NeuralDictTrainer.train(vectors: x, count: count, dimension: m, options: options)
    print(String(format: "[bench] NeuralDict defaults N=%d m=%d s=%d, %d vectors: %.1f s; held-out MSE %.3e -> %.3e "
                 + "(relative %.4f -> %.4f), train MSE %.3e -> %.3e, %d atoms replaced, step %d kept",
                 n, m, s, count, r.seconds, r.initialTestMSE, r.testMSE, r.initialTestRelativeError, r.testRelativeError,
                 r.initialTrainMSE, r.trainMSE, r.replacedAtoms, r.selectedStep))
}
}
