import CBLAS
import Dispatch
import SparseCoding

/// Causal attention that reads a KV cache in its own format (an ``AttentionSource``),
/// never materializing a whole layer in fp32.
///
/// - **Decode** (a few query tokens): work units are (KV head, range of positions), shared
///   out over ``ComputeThreads``. A unit scores its positions with dot products on keys
///   decoded a block at a time, exponentiates against its own maximum and accumulates
///   values in the source's space (channels, or dictionary atoms for CSR); the units of a
///   head are then merged with the usual log-sum-exp rescaling.
/// - **Prefill** (a batch): per query head and block of query tokens, scores for each
///   block of decoded keys come from one sgemm, the softmax is exact over the row, and the
///   output is accumulated by sgemm over decoded value blocks. OpenBLAS threads the sgemms.
///
/// Query token i (position start + i) sees positions 0 ... start + i.
enum FusedAttention {
    /// Positions per decoded key or value block in the decode path.
    static let blockPositions = 64
    /// Query tokens up to which the decode path runs.
    static let decodeTokens = 4
    /// Query tokens per prefill block, and positions per decoded prefill key/value block.
    static let prefillQueryBlock = 256
    static let prefillKeyBlock = 512
    /// Positions per KV head below which a decode step stays on one thread (waking a
    /// second one costs more than it saves).
    static let minParallelPositions = 512

    /// - Parameters:
    ///   - queries: (n, heads * d), RoPE applied.
    ///   - out: (n, heads * d).
    static func run<S: AttentionSource>(_ src: S, queries q: UnsafePointer<Float>, count n: Int, start: Int,
                                        heads: Int, kvHeads: Int, scale: Float, into out: UnsafeMutablePointer<Float>,
                                        threads: Int = ComputeThreads.count) {
        guard n > 0 else { return }
        if n <= decodeTokens {
            decode(src, queries: q, count: n, start: start, heads: heads, kvHeads: kvHeads, scale: scale, into: out,
                   threads: threads)
        } else {
            prefill(src, queries: q, count: n, start: start, heads: heads, kvHeads: kvHeads, scale: scale, into: out)
        }
    }

    // MARK: - Decode

    /// What the units of one decode step share. Safe to send: the source and queries are
    /// only read; each unit writes only its own slice of `buffers`.
    private struct DecodeJob<S: AttentionSource>: @unchecked Sendable {
        let src: S
        let q: UnsafePointer<Float>
        let n: Int, start: Int, group: Int, qDim: Int, d: Int, scale: Float
        let parts: Int, total: Int
        /// per unit: scores (rows, span), max (rows), sum (rows), acc (rows, width), key and value scratch
        let buffers: UnsafeMutablePointer<Float>
        let unitFloats: Int, span: Int, rows: Int, width: Int

        func maxes(_ u: Int) -> UnsafeMutablePointer<Float> { buffers + u * unitFloats + rows * span }
        func sums(_ u: Int) -> UnsafeMutablePointer<Float> { maxes(u) + rows }
        func acc(_ u: Int) -> UnsafeMutablePointer<Float> { sums(u) + rows }

        func run(unit u: Int) {
            let g = u / parts, part = u % parts
            let lo = total * part / parts, hi = total * (part + 1) / parts, len = hi - lo
            let scores = buffers + u * unitFloats
            let m = maxes(u), l = sums(u), acc = acc(u)
            let kScratch = acc + rows * width, vScratch = kScratch + FusedAttention.blockPositions * d
            acc.update(repeating: 0, count: rows * width)
            // Scores in the source's own format; positions a row may not see get -inf.
            withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: rows) { qp in
                for r in 0..<rows { qp[r] = q + r / group * qDim + (g * group + r % group) * d }
                src.scores(head: g, lo, hi, queries: UnsafePointer(qp.baseAddress!), rows: rows, scale: scale,
                           into: scores, stride: span, scratch: kScratch)
            }
            for r in 0..<rows {
                let limit = start + r / group + 1
                if limit < hi { (scores + r * span + max(0, limit - lo)).update(repeating: -.infinity, count: hi - max(lo, limit)) }
            }
            for r in 0..<rows {
                let s = scores + r * span
                let mx = Kernels.maximum(s, count: len)
                m[r] = mx
                l[r] = mx == -.infinity ? 0 : Kernels.expSubtract(s, count: len, max: mx)
                if mx == -.infinity { s.update(repeating: 0, count: len) }
            }
            src.accumulate(head: g, lo, hi, weights: scores, stride: span, rows: rows, into: acc, scratch: vScratch)
        }

        /// Merges the units of KV head g into the output rows.
        func merge(head g: Int, into out: UnsafeMutablePointer<Float>) {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: rows * (width + 1)) { buf in
                let combined = buf.baseAddress!, inv = combined + rows * width
                for r in 0..<rows {
                    var mx = -Float.infinity
                    for p in 0..<parts { mx = max(mx, maxes(g * parts + p)[r]) }
                    var total: Float = 0
                    let c = combined + r * width
                    c.update(repeating: 0, count: width)
                    for p in 0..<parts {
                        let u = g * parts + p, mu = maxes(u)[r]
                        guard mu > -.infinity else { continue }
                        let w = Kernels.exp(mu - mx)
                        total += w * sums(u)[r]
                        Kernels.axpy(w, acc(u) + r * width, c, width)
                    }
                    inv[r] = total > 0 ? 1 / total : 0
                }
                for i in 0..<n {
                    src.finish(head: g, acc: combined + i * group * width, rows: group, scale: inv + i * group,
                               into: out + i * qDim + g * group * d, outStride: d)
                }
            }
        }
    }

    private static func decode<S: AttentionSource>(_ src: S, queries q: UnsafePointer<Float>, count n: Int, start: Int,
                                                   heads: Int, kvHeads: Int, scale: Float,
                                                   into out: UnsafeMutablePointer<Float>, threads: Int) {
        let d = src.headDim, group = heads / kvHeads, total = start + n
        let parts = threads > 1 && total >= minParallelPositions ? min(threads, max(1, total / 256)) : 1
        let span = (total + parts - 1) / parts, rows = n * group, width = src.accumulatorWidth
        let unitFloats = rows * span + 2 * rows + rows * width + 2 * blockPositions * d
        let units = kvHeads * parts
        // Reused across steps: a fresh block of this size would be an mmap and munmap per layer.
        ScratchPool.shared.withFloats(units * unitFloats) { buffers in
            let job = DecodeJob(src: src, q: q, n: n, start: start, group: group, qDim: heads * d, d: d, scale: scale,
                                parts: parts, total: total, buffers: buffers, unitFloats: unitFloats, span: span,
                                rows: rows, width: width)
            if units == 1 || threads == 1 {
                for u in 0..<units { job.run(unit: u) }
            } else {
                ComputePool.shared.perform(iterations: units, threads: threads) { job.run(unit: $0) }
            }
            for g in 0..<kvHeads { job.merge(head: g, into: out) }
        }
    }

    // MARK: - Prefill

    private static func prefill<S: AttentionSource>(_ src: S, queries q: UnsafePointer<Float>, count n: Int, start: Int,
                                                    heads: Int, kvHeads: Int, scale: Float,
                                                    into out: UnsafeMutablePointer<Float>) {
        let d = src.headDim, group = heads / kvHeads, qDim = heads * d, total = start + n
        let tq = min(n, prefillQueryBlock), kb = prefillKeyBlock
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: tq * total)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: kb * d)
        defer {
            scores.deallocate()
            scratch.deallocate()
        }
        for h in 0..<heads {
            let g = h / group
            var i0 = 0
            while i0 < n {
                let i1 = min(n, i0 + tq), rq = i1 - i0, visible = start + i1
                var lo = 0
                while lo < visible {
                    let hi = min(visible, lo + kb)
                    let k = src.keys(head: g, lo, hi, scratch: scratch)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rq), Int32(hi - lo), Int32(d), scale,
                                q + i0 * qDim + h * d, Int32(qDim), k, Int32(d), 0, scores + lo, Int32(visible))
                    lo = hi
                }
                for i in 0..<rq {
                    let row = scores + i * visible, limit = start + i0 + i + 1
                    Kernels.softmax(row, count: limit)
                    if limit < visible { (row + limit).update(repeating: 0, count: visible - limit) }
                }
                lo = 0
                while lo < visible {
                    let hi = min(visible, lo + kb)
                    let v = src.values(head: g, lo, hi, scratch: scratch)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rq), Int32(d), Int32(hi - lo), 1,
                                scores + lo, Int32(visible), v, Int32(d), lo == 0 ? 0 : 1,
                                out + i0 * qDim + h * d, Int32(qDim))
                    lo = hi
                }
                i0 = i1
            }
        }
    }
}
