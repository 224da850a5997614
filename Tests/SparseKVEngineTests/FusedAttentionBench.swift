import Foundation
import Testing
@testable import SparseKVEngine

/// One decode step's attention on one layer of SmolLM2's shape (3 KV heads of 64, 9 query
/// heads) holding 4,096 positions of random keys and values, per cache kind: median of
/// repeated calls at 1 and 2 threads, with fp32 measured in the same run as the baseline.
/// The CSR caches use the committed dictionary. Benchmark, not a test: run with
/// SPARSEKV_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter FusedAttentionBench
/// (SPARSEKV_BENCH_KINDS="fp32 csr:8,coef=i8" picks kinds, SPARSEKV_BENCH_CALLS the calls,
/// SPARSEKV_BENCH_POSITIONS the length).
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["SPARSEKV_BENCH"] != nil && RealAssets.available))
struct FusedAttentionBench {
    static let dictionary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("dicts/SmolLM2-135M-Instruct.Q4_1.csr.gguf").path

    static func cache(_ kind: String, geometry g: KVCacheGeometry, rope: RoPE) throws -> any KVCache {
        if kind.hasPrefix("csr") {
            let settings = try CSRSettings(parsing: kind)
            return try CSRCodec(dictionary: try CSRDictionary.load(path: dictionary), settings: settings)
                .makeCache(geometry: g, rope: rope)
        }
        return try FusedAttentionTests.makeCache(kind, kvHeads: g.kvHeads, capacity: g.capacity)
    }

    static func threadCPUNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    @Test func decodeStep() throws {
        let positions = Int(ProcessInfo.processInfo.environment["SPARSEKV_BENCH_POSITIONS"] ?? "") ?? 4096
        let kvHeads = 3, heads = 9, d = 64, width = kvHeads * d
        let rope = RoPE(headDim: d, ropeDimension: d, base: 100_000)
        let g = KVCacheGeometry(layers: 0..<2, kvHeads: kvHeads, headDim: d, capacity: positions + 1)
        let k = FusedAttentionTests.rows(positions + 1, width: width, seed: 1).map { $0 * 0.5 }
        let v = FusedAttentionTests.rows(positions + 1, width: width, seed: 2).map { $0 * 0.5 }
        let q = FusedAttentionTests.rows(1, width: heads * d, seed: 3)
        var out = [Float](repeating: 0, count: heads * d)
        let before = ComputeThreads.count
        defer { ComputeThreads.set(before) }
        var baseline: [Int: Double] = [:]
        let calls = Int(ProcessInfo.processInfo.environment["SPARSEKV_BENCH_CALLS"] ?? "") ?? 31
        print("attention, one decode step, one layer, \(positions) positions: µs, median of \(calls) calls")
        let kinds = ProcessInfo.processInfo.environment["SPARSEKV_BENCH_KINDS"]?.split(separator: " ").map(String.init)
            ?? ["fp32", "fp16", "kivi4", "csr:8,coef=i8", "csr:16,coef=i8"]
        for kind in kinds {
            let c = try Self.cache(kind, geometry: g, rope: rope)
            var t = 0
            while t <= positions {
                let b = t < positions ? min(512, positions - t) : 1
                try k.withUnsafeBufferPointer { kp in
                    try v.withUnsafeBufferPointer { vp in
                        try c.append(layer: 1, keys: kp.baseAddress! + t * width, values: vp.baseAddress! + t * width, count: b)
                    }
                }
                t += b
            }
            var line = kind.padding(toLength: 16, withPad: " ", startingAt: 0)
            for threads in [1, 2] {
                ComputeThreads.set(threads)
                var times: [Double] = [], cpu: [Double] = []
                for _ in 0..<calls {
                    let c0 = Self.threadCPUNanoseconds()
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    try q.withUnsafeBufferPointer { qp in
                        try out.withUnsafeMutableBufferPointer {
                            try c.attend(layer: 1, queries: qp.baseAddress!, count: 1, heads: heads, scale: 0.125,
                                         into: $0.baseAddress!)
                        }
                    }
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000)
                    cpu.append(Double(Self.threadCPUNanoseconds() - c0) / 1000)
                }
                times.sort()
                cpu.sort()
                let median = times[calls / 2]
                if kind == "fp32" { baseline[threads] = median }
                line += String(format: "  %d thread(s) %8.1f µs (%.2fx fp32)", threads, median, median / (baseline[threads] ?? median))
                // On a busy machine the calling thread's CPU time at 1 thread still compares kernels.
                if threads == 1 { line += String(format: " [cpu %7.1f µs]", cpu[calls / 2]) }
            }
            print(line)
        }
    }
}

/// Serializing and reading back one layer's CSR cache of 4,096 positions (random rows,
/// committed dictionary), fixed-width indices against gap-coded ones: ms, median of 5.
/// Benchmark, not a test: SPARSEKV_BENCH=1 ... --filter CSRTransferBench
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["SPARSEKV_BENCH"] != nil && RealAssets.available))
struct CSRTransferBench {
    @Test func serializeAndRead() throws {
        let positions = 4096, kvHeads = 3, d = 64, width = kvHeads * d
        let rope = RoPE(headDim: d, ropeDimension: d, base: 100_000)
        let g = KVCacheGeometry(layers: 0..<1, kvHeads: kvHeads, headDim: d, capacity: positions)
        let k = FusedAttentionTests.rows(positions, width: width, seed: 1).map { $0 * 0.5 }
        let v = FusedAttentionTests.rows(positions, width: width, seed: 2).map { $0 * 0.5 }
        let dictionary = try CSRDictionary.load(path: FusedAttentionBench.dictionary)
        print("one layer of \(positions) positions: first serialize, serialize / read back (median of 5), ms; bytes")
        for spec in ["csr:16,coef=i6", "csr:16,coef=i6,ec=gaps"] {
            let codec = try CSRCodec(dictionary: dictionary, settings: try CSRSettings(parsing: spec))
            let c = codec.makeCache(geometry: g, rope: rope)
            try k.withUnsafeBufferPointer { kp in
                try v.withUnsafeBufferPointer { vp in try c.append(layer: 0, keys: kp.baseAddress!, values: vp.baseAddress!, count: positions) }
            }
            var write: [Double] = [], read: [Double] = [], bytes = 0
            for _ in 0..<5 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                let payload = try c.serialize(layers: 0..<1)
                let t1 = DispatchTime.now().uptimeNanoseconds
                _ = try CSRCache.deserialize(payload, capacity: positions, rope: rope, codec: codec)
                let t2 = DispatchTime.now().uptimeNanoseconds
                write.append(Double(t1 - t0) / 1e6)
                read.append(Double(t2 - t1) / 1e6)
                bytes = payload.count
            }
            print(String(format: "%@  %8.1f, %8.1f / %8.1f ms  %d bytes", spec.padding(toLength: 24, withPad: " ", startingAt: 0),
                         write[0], write.sorted()[2], read.sorted()[2], bytes))
        }
    }
}
