import Dispatch
import Foundation
import Testing
@testable import SparseCoding

// Benchmarks and calibration, not tests: run with SPARSEKV_BENCH=1. Nothing asserts on
// time or on the printed divergences.

private let benchEnabled = ProcessInfo.processInfo.environment["SPARSEKV_BENCH"] != nil

@Suite(.serialized, .enabled(if: benchEnabled))
struct LayerGroupingBenchmarks {

/// The real workload: 30 layers of 20,000 vectors, m = 64 (keys) and 32 (values).
@Test(arguments: [64, 32])
func groupingTime(dimension m: Int) throws {
    var sig = Signals(seed: 1)
    let layers = (0..<30).map { l -> [Float] in
        var x = sig.gaussian(count: 20_000, dimension: m)
        for r in 0..<20_000 { x[r * m] += 0.05 * Float(l) }
        return x
    }
    var times: [Double] = []
    var groups = 0
    for _ in 0..<3 {
        let start = DispatchTime.now().uptimeNanoseconds
        groups = try LayerGrouping.group(layers: layers, dimension: m).groups.count
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
    }
    print("[bench] grouping 30 x 20000 x \(m): median \(String(format: "%.3f", times.sorted()[1])) s, \(groups) groups")
}

/// Mean and spread of the JS divergence between two layers (m = 8) that differ by a mean
/// shift along one axis or a scale of every axis, per sample count: the table in
/// LayerGroupingOptions' documentation.
@Test(arguments: [0.0, 1.0])
func divergenceCalibration(smoothing: Double) throws {
    let m = 8
    let cases: [(String, Float, Float)] = [("same", 0, 1), ("shift 0.25", 0.25, 1), ("shift 0.5", 0.5, 1),
                                           ("shift 1", 1, 1), ("scale 1.1", 0, 1.1), ("scale 1.2", 0, 1.2),
                                           ("scale 1.5", 0, 1.5)]
    print("[bench] smoothing \(smoothing)")
    var sig = Signals(seed: 2)
    for n in [200, 500, 2000, 5000, 20_000] {
        var line = "[bench] n \(n):"
        for (name, shift, scale) in cases {
            var values: [Double] = []
            for _ in 0..<5 {
                let a = sig.gaussian(count: n, dimension: m)
                var b = sig.gaussian(count: n, dimension: m)
                for r in 0..<n {
                    for i in 0..<m { b[r * m + i] *= scale }
                    b[r * m] += shift
                }
                values.append(try LayerGrouping.group(layers: [a, b], dimension: m,
                                                      options: .init(smoothing: smoothing)).js(0, 1))
            }
            let mean = values.reduce(0, +) / 5
            let sd = (values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 5).squareRoot()
            line += " \(name) \(String(format: "%.3f±%.3f", mean, sd))"
        }
        print(line)
    }
}

/// What sampling noise alone adds up to over 30 layers of one distribution (m = 8): the
/// sum of adjacent divergences that `delta2` is compared with, and the groups it gives.
@Test(arguments: [500, 2000, 20_000])
func noiseAlongThirtyLayers(samples n: Int) throws {
    var sig = Signals(seed: 3)
    let layers = (0..<30).map { _ in sig.gaussian(count: n, dimension: 8) }
    let result = try LayerGrouping.group(layers: layers, dimension: 8)
    let chain = (1..<30).reduce(0.0) { $0 + result.js($1 - 1, $1) }
    let worst = result.divergence.max() ?? 0
    print("[bench] 30 layers of one distribution, n \(n): adjacent sum \(String(format: "%.3f", chain)), "
          + "largest pair \(String(format: "%.3f", worst)), groups \(result.groups)")
}
}
