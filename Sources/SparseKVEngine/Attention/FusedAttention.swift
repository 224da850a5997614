import CBLAS
import Dispatch
import Synchronization
import SparseCoding

/// Causal attention that reads a KV cache in its own format (an ``AttentionSource``),
/// never materializing a whole layer in fp32.
///
/// - **Decode** (a few query tokens): work units are (KV head, range of positions), shared
///   out over ``ComputeThreads``. A unit scores its positions with dot products on keys
///   decoded a block at a time, exponentiates against its own maximum and accumulates
///   values in the source's space (channels, or dictionary atoms for CSR); the units of a
///   head are then merged with the usual log-sum-exp rescaling.
/// - **Prefill** (a batch): per KV head and block of query tokens, each block of keys and
///   values is decoded once for every query head of the group; scores come from one sgemm
///   per head, the softmax runs online (running maximum and sum per query row) and the
///   output is accumulated by sgemm. With OpenBLAS on one thread (the CLI's setting) the
///   (KV head, query block) units are shared out over ``ComputeThreads``; otherwise they
///   run in turn and OpenBLAS threads each sgemm.
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
    ///   - beside: work that runs in the same parallel loop as a decode step's units, before
    ///     them (a batch runs it in a loop of its own first).
    static func run<S: AttentionSource>(_ src: S, queries q: UnsafePointer<Float>, count n: Int, start: Int,
                                        heads: Int, kvHeads: Int, scale: Float, into out: UnsafeMutablePointer<Float>,
                                        threads: Int = ComputeThreads.count, beside: BesideUnits? = nil) {
        guard n > 0 else {
            for u in 0..<(beside?.count ?? 0) { beside?.run(u) }
            return
        }
        if n <= decodeTokens {
            decode(src, queries: q, count: n, start: start, heads: heads, kvHeads: kvHeads, scale: scale, into: out,
                   threads: threads, beside: beside)
        } else {
            if let beside { ComputePool.shared.perform(iterations: beside.count, threads: threads, beside.run) }
            prefill(src, queries: q, count: n, start: start, heads: heads, kvHeads: kvHeads, scale: scale, into: out,
                    threads: threads)
        }
    }

    /// Units of other work for a decode step's parallel loop, independent of its attention
    /// (CSR: the pursuit of the step's new rows, whose codes this step's attention does not
    /// read). They take the loop's first iterations, so the longest, put first, starts first,
    /// and the threads that are not on them take the attention units meanwhile.
    struct BesideUnits: Sendable {
        let count: Int
        let run: @Sendable (Int) -> Void
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
        /// (n, heads * d); merging head g writes its rows' columns only.
        let out: UnsafeMutablePointer<Float>

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
        func merge(head g: Int) {
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
                                                   into out: UnsafeMutablePointer<Float>, threads: Int, beside: BesideUnits?) {
        let d = src.headDim, group = heads / kvHeads, total = start + n
        let parts = threads > 1 && total >= minParallelPositions ? min(threads, max(1, total / 256)) : 1
        let span = (total + parts - 1) / parts, rows = n * group, width = src.accumulatorWidth
        let unitFloats = rows * span + 2 * rows + rows * width + 2 * blockPositions * d
        let units = kvHeads * parts
        // Reused across steps: a fresh block of this size would be an mmap and munmap per layer.
        ScratchPool.shared.withFloats(units * unitFloats) { buffers in
            let job = DecodeJob(src: src, q: q, n: n, start: start, group: group, qDim: heads * d, d: d, scale: scale,
                                parts: parts, total: total, buffers: buffers, unitFloats: unitFloats, span: span,
                                rows: rows, width: width, out: out)
            let first = beside?.count ?? 0
            if first + units == 1 || threads == 1 {
                for u in 0..<first { beside?.run(u) }
                for u in 0..<units { job.run(unit: u) }
            } else {
                ComputePool.shared.perform(iterations: first + units, threads: threads) { u in
                    if u < first { beside?.run(u) } else { job.run(unit: u - first) }
                }
            }
            // Merging a head in atom space ends in a dictionary product (about 200k multiply-adds
            // for 3 rows of 1,024 atoms of 64): the heads then go to the threads as well.
            if width > d && kvHeads > 1 && threads > 1 && units > 1 {
                ComputePool.shared.perform(iterations: kvHeads, threads: min(threads, kvHeads)) { job.merge(head: $0) }
            } else {
                for g in 0..<kvHeads { job.merge(head: g) }
            }
        }
    }

    // MARK: - Prefill

    /// Per KV head and block of query tokens, each block of keys and values is decoded once
    /// and serves every query head of the group (it was decoded once per query head). The
    /// softmax runs online, as in FlashAttention: each query row keeps its running maximum
    /// and sum, and its output is rescaled by e^(old max - new max) when a block raises the
    /// maximum; the rows are divided by their sums at the end. The query blocks stay
    /// outermost so that their output rows stay in cache: with the key blocks outermost
    /// (each decoded only once in all) prefill measured 1-2% slower for fp16.
    private static func prefill<S: AttentionSource>(_ src: S, queries q: UnsafePointer<Float>, count n: Int, start: Int,
                                                    heads: Int, kvHeads: Int, scale: Float,
                                                    into out: UnsafeMutablePointer<Float>, threads: Int) {
        let d = src.headDim, group = heads / kvHeads, qDim = heads * d
        let tq = min(n, prefillQueryBlock), blocks = (n + tq - 1) / tq, units = kvHeads * blocks
        let job = PrefillJob(src: src, q: q, n: n, start: start, kvHeads: kvHeads, group: group, qDim: qDim, d: d, tq: tq,
                             scale: scale, out: out)
        // Split: the units run on the compute threads, each with its own buffers.
        let workers = BLASRuntime.engineSplitsBatches ? min(threads, units) : 1
        if workers <= 1 {
            job.withBuffers { b in for u in 0..<units { job.run(unit: u, buffers: b) } }
            return
        }
        let next = Atomic<Int>(0)
        ComputePool.shared.perform(iterations: workers, threads: workers) { _ in
            job.withBuffers { b in
                while true {
                    let u = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard u < units else { return }
                    job.run(unit: u, buffers: b)
                }
            }
        }
    }

    /// What the units of one prefill share: unit u is KV head u % kvHeads and query block
    /// u / kvHeads (the later blocks, which see more positions, are handed out last). Safe
    /// to send: each unit writes only its own rows and heads of `out`.
    private struct PrefillJob<S: AttentionSource>: @unchecked Sendable {
        let src: S
        let q: UnsafePointer<Float>
        let n: Int, start: Int, kvHeads: Int, group: Int, qDim: Int, d: Int, tq: Int, scale: Float
        let out: UnsafeMutablePointer<Float>

        /// One unit's scratch: scores (tq, kb), key and value blocks, running maxima and sums.
        struct Buffers {
            let scores, kScratch, vScratch, maxes, sums: UnsafeMutablePointer<Float>
        }

        /// From the scratch pool: a fresh block of this size (0.8 MB) would be mapped, faulted
        /// in and unmapped per layer and thread.
        func withBuffers(_ body: (Buffers) -> Void) {
            let kb = FusedAttention.prefillKeyBlock
            ScratchPool.shared.withFloats(tq * kb + 2 * kb * d + 2 * group * tq) { p in
                let k = p + tq * kb, m = k + 2 * kb * d
                body(Buffers(scores: p, kScratch: k, vScratch: k + kb * d, maxes: m, sums: m + group * tq))
            }
        }

        func run(unit u: Int, buffers b: Buffers) {
            let g = u % kvHeads, block = u / kvHeads
            let kb = FusedAttention.prefillKeyBlock
            let i0 = block * tq, i1 = min(n, i0 + tq), rq = i1 - i0
            let scores = b.scores, maxes = b.maxes, sums = b.sums
            for i in i0..<i1 {
                for h in 0..<group { (out + i * qDim + (g * group + h) * d).update(repeating: 0, count: d) }
            }
            maxes.update(repeating: -.infinity, count: group * tq)
            sums.update(repeating: 0, count: group * tq)
            var lo = 0
            // Query token i sees positions up to start + i.
            while lo < start + i1 {
                let hi = min(start + i1, lo + kb), width = hi - lo
                let k = src.keys(head: g, lo, hi, scratch: b.kScratch)
                let v = src.values(head: g, lo, hi, scratch: b.vScratch)
                let first = max(0, lo - start - i0)  // rows before it see none of the block
                for h in 0..<group {
                    let column = (g * group + h) * d, m = maxes + h * tq, l = sums + h * tq
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rq - first), Int32(width), Int32(d), scale,
                                q + (i0 + first) * qDim + column, Int32(qDim), k, Int32(d), 0, scores, Int32(kb))
                    for r in first..<rq {
                        let i = i0 + r, row = scores + (r - first) * kb, o = out + i * qDim + column
                        let visible = min(hi, start + i + 1) - lo
                        let old = m[r], new = max(old, Kernels.maximum(row, count: visible))
                        let sum = Kernels.expSubtract(row, count: visible, max: new)
                        if visible < width { (row + visible).update(repeating: 0, count: width - visible) }
                        if old == -.infinity {
                            l[r] = sum
                        } else {
                            let rescale = Kernels.exp(old - new)
                            l[r] = l[r] * rescale + sum
                            if rescale != 1 { Kernels.scale(o, count: d, by: rescale) }
                        }
                        m[r] = new
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rq - first), Int32(d), Int32(width), 1,
                                scores, Int32(kb), v, Int32(d), 1, out + (i0 + first) * qDim + column, Int32(qDim))
                }
                lo = hi
            }
            for h in 0..<group {
                for r in 0..<rq {
                    let total = sums[h * tq + r]
                    Kernels.scale(out + (i0 + r) * qDim + (g * group + h) * d, count: d, by: total > 0 ? 1 / total : 0)
                }
            }
        }
    }
}
