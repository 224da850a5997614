// CSR values accumulated in atom space (CSRCache+Attention.swift, `accumulate`).
//
// A decode step's attention weights are added into one accumulator per dictionary atom:
// acc[atom] += a_t * c_t for every (atom, coefficient) pair of every position t, then one
// dictionary product per head and chunk turns the accumulators into channels. The
// accumulators of up to four query rows sit side by side, acc4[atom] = (row 0, ..., row 3),
// so a pair costs one 4-wide multiply and add at one scattered location.
//
// This is the loop over a run of positions whose values are all codes (no guard rows, not
// the latest append's exact rows): the caller handles those. Per pair, in this order: the
// coefficient w = (float)q * scale, the product a_t * w per lane, rounded, then the add.
// The Swift loop it replaces did exactly that, so the bits are the same.
#pragma once
#include "csr_codes.h"

typedef float sparsekv_float4 __attribute__((ext_vector_type(4)));

// One run: positions t0 ..< t1 of KV head `head`, each `chunks` rows of `s` pairs (row
// (t * kvHeads + head) * chunks + c), int8 coefficients and one fp16 scale per row.
//   weights  the attention weights: row r's weight for position t at weights[r * stride + t - lo]
//   rows     1 ... 4 query rows (lanes past `rows` get weight 0)
//   acc4     (chunks, atoms) accumulators of 4 lanes
typedef struct {
    const uint8_t *indexBytes;
    long indexByteCount, width, s, chunks, kvHeads, head, atoms;
    const int8_t *coef;
    const uint16_t *scales;
    const float *weights;
    long stride, rows, lo;
    sparsekv_float4 *acc4;
} sparsekv_value_run;

static inline void sparsekv_value_accumulate(const sparsekv_value_run *a, long t0, long t1) {
#pragma clang fp contract(off)
    long s = a->s, chunks = a->chunks;
    const float *p = a->weights - a->lo;
    int32_t ib[64];
    for (long t = t0; t < t1; t++) {
        sparsekv_float4 weight = {p[t], 0, 0, 0};
        if (a->rows > 1) weight.y = p[a->stride + t];
        if (a->rows > 2) weight.z = p[2 * a->stride + t];
        if (a->rows > 3) weight.w = p[3 * a->stride + t];
        long row0 = (t * a->kvHeads + a->head) * chunks;
        for (long c = 0; c < chunks; c++) {
            long row = row0 + c, first = row * s;
            float scale = sparsekv_half_to_float(a->scales[row]);
            const int8_t *q = a->coef + first;
            sparsekv_float4 *base = a->acc4 + c * a->atoms;
            for (long k0 = 0; k0 < s; k0 += 64) {
                long n = s - k0 < 64 ? s - k0 : 64;
                sparsekv_unpack_indices(a->indexBytes, a->indexByteCount, a->width, first + k0, n, ib);
                for (long k = 0; k < n; k++) {
                    float cw = (float)q[k0 + k] * scale;
                    base[ib[k]] = base[ib[k]] + weight * cw;
                }
            }
        }
    }
}

#if defined(__x86_64__)

// One row's s pairs added into its chunk's accumulators, in order; s a constant once inlined
// (8 and 16 below), so the loop unrolls.
__attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vl"), always_inline))
static inline void sparsekv_value_add_pairs(sparsekv_float4 *base, const int32_t *ix, const float *cw, sparsekv_float4 weight,
                                            const long s) {
#pragma clang fp contract(off)
    for (long k = 0; k < s; k++) base[ix[k]] = base[ix[k]] + weight * cw[k];
}

// sparsekv_value_accumulate for rows of at most 16 pairs, indices of at most 16 bits and at
// most 4 chunks per position: a row's indices come from one vpermb and its coefficients
// from one conversion and one multiply by the scale (the same products; the fp16 scale is
// converted by the F16C instruction, which gives sparsekv_half_to_float's value for every
// scale that is not a NaN, where the software conversion took a dozen scalar operations and
// branches per row: about 8% of a run of 8 pairs per row, in an in-process A/B at 8,192
// positions). Eight positions are unpacked into a small buffer before their pairs are
// added, in order: a load of one index right after the 64-byte store that wrote it waits
// for the store to reach the cache, and in between the eight stores have time to get there.
__attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vl,f16c")))
static inline void sparsekv_value_accumulate_avx512(const sparsekv_value_run *a, long t0, long t1) {
#pragma clang fp contract(off)
    long s = a->s, chunks = a->chunks, w = a->width;
    const float *p = a->weights - a->lo;
    __mmask16 lanes = (__mmask16)((1u << s) - 1);
    int32_t ib[32][16] __attribute__((aligned(64)));
    float wb[32][16] __attribute__((aligned(64)));
    sparsekv_float4 weights[8];
    for (long b0 = t0; b0 < t1; b0 += 8) {
        long n = t1 - b0 < 8 ? t1 - b0 : 8;
        for (long j = 0; j < n; j++) {
            long t = b0 + j;
            sparsekv_float4 weight = {p[t], 0, 0, 0};
            if (a->rows > 1) weight.y = p[a->stride + t];
            if (a->rows > 2) weight.z = p[2 * a->stride + t];
            if (a->rows > 3) weight.w = p[3 * a->stride + t];
            weights[j] = weight;
            long row0 = (t * a->kvHeads + a->head) * chunks;
            for (long c = 0; c < chunks; c++) {
                long row = row0 + c, first = row * s;
                _mm512_store_si512(ib[j * chunks + c], sparsekv_indices16_avx512(a->indexBytes, a->indexByteCount, w, first, s));
                __m512i q = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(lanes, a->coef + first));
                __m512 scale = _mm512_set1_ps(_cvtsh_ss(a->scales[row]));
                _mm512_store_ps(wb[j * chunks + c], _mm512_mul_ps(_mm512_cvtepi32_ps(q), scale));
            }
        }
        for (long j = 0; j < n; j++) {
            sparsekv_float4 weight = weights[j];
            for (long c = 0; c < chunks; c++) {
                sparsekv_float4 *base = a->acc4 + c * a->atoms;
                const int32_t *ix = ib[j * chunks + c];
                const float *cw = wb[j * chunks + c];
                if (s == 8) sparsekv_value_add_pairs(base, ix, cw, weight, 8);
                else if (s == 16) sparsekv_value_add_pairs(base, ix, cw, weight, 16);
                else sparsekv_value_add_pairs(base, ix, cw, weight, s);
            }
        }
    }
}

// sparsekv_value_accumulate for positions of at most 16 pairs in all (chunks * s <= 16) in at
// most 4 chunks (their fp16 scales are converted 4 at a time), indices of at most 16 bits:
// a position's pairs are contiguous in the stream, so one
// unpack serves all its chunks, and two positions when both fit one 64-byte read (csr:8's
// values: 2 chunks of 4 pairs). The unpacked index of chunk c's pair is offset by c * atoms,
// so the adds address acc4 directly; a position's coefficients are converted in one vector
// (each lane times its chunk's scale, the same products). The adds are
// sparsekv_value_accumulate's, in its order: positions in order, each position's chunks in
// order, each chunk's pairs in order. With few pairs a position, the work around the adds
// (an unpack per chunk row, its lane offsets multiplied out each time, the chunk's
// accumulators looked up per row) took most of a run's time: in a C harness, 8,192
// positions of one head, 2 chunks of 4 pairs (csr:8's values) took 148 µs row by row and
// 70-75 µs this way, 2 chunks of 8 (csr:16's) 167-178 -> 120-132 µs.
__attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vl,f16c")))
static inline void sparsekv_value_accumulate_positions_avx512(const sparsekv_value_run *a, long t0, long t1) {
#pragma clang fp contract(off)
    long s = a->s, chunks = a->chunks, w = a->width, pp = s * chunks, stride = a->kvHeads * pp;
    const float *p = a->weights - a->lo;
    int32_t offs[16], lift[16], chunkOf[16];
    int two = sparsekv_position_offsets(pp, stride, w, offs);
    for (long i = 0; i < 16; i++) {
        lift[i] = (int32_t)(i % pp / s * a->atoms);
        chunkOf[i] = (int32_t)(i % pp / s);
    }
    __m512i off = _mm512_loadu_si512(offs), up = _mm512_loadu_si512(lift), chunkLane = _mm512_loadu_si512(chunkOf);
    __mmask16 one = (__mmask16)((1u << pp) - 1), both = two ? (__mmask16)((1u << (2 * pp)) - 1) : one;
    __mmask8 chunkMask = (__mmask8)((1u << chunks) - 1);
    int32_t ib[8 * 16 + 16] __attribute__((aligned(64)));
    float wb[8 * 16 + 16] __attribute__((aligned(64)));
    sparsekv_float4 weights[8];
    for (long b0 = t0; b0 < t1; b0 += 8) {
        long n = t1 - b0 < 8 ? t1 - b0 : 8;
        for (long j = 0; j < n; j++) {
            long t = b0 + j, row0 = (t * a->kvHeads + a->head) * chunks, first = row0 * s;
            if (!(j & 1) || !two) {
                int pair = two && j + 1 < n;
                __m512i v = sparsekv_indices_at_avx512(a->indexBytes, a->indexByteCount, w, first * w,
                                                       (pair ? stride + pp : pp) * w, off, pair ? both : one);
                _mm512_mask_storeu_epi32(ib + j * pp, pair ? both : one, _mm512_add_epi32(v, up));
            }
            sparsekv_float4 weight = {p[t], 0, 0, 0};
            if (a->rows > 1) weight.y = p[a->stride + t];
            if (a->rows > 2) weight.z = p[2 * a->stride + t];
            if (a->rows > 3) weight.w = p[3 * a->stride + t];
            weights[j] = weight;
            __m512i q = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(one, a->coef + first));
            __m512 sc = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_maskz_loadu_epi16(chunkMask, a->scales + row0)));
            _mm512_mask_storeu_ps(wb + j * pp, one, _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_permutexvar_ps(chunkLane, sc)));
        }
        for (long j = 0; j < n; j++) {
            const int32_t *ix = ib + j * pp;
            const float *cw = wb + j * pp;
            if (pp == 8) sparsekv_value_add_pairs(a->acc4, ix, cw, weights[j], 8);
            else if (pp == 16) sparsekv_value_add_pairs(a->acc4, ix, cw, weights[j], 16);
            else sparsekv_value_add_pairs(a->acc4, ix, cw, weights[j], pp);
        }
    }
}

// sparsekv_half_atoms_product_avx512 with `rows` and `lanes` (16-channel vectors per atom
// row) constants once inlined: the loops unroll and the accumulators stay in registers.
__attribute__((target("avx512f,f16c,fma"), always_inline))
static inline void sparsekv_half_atoms_product_fixed(const uint16_t *atoms, long count, const float *w, long wStride,
                                                     float *out, long outStride, const long rows, const long lanes) {
    __m512 acc[4][4];
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < lanes; i++) acc[r][i] = _mm512_loadu_ps(out + r * outStride + 16 * i);
    for (long j = 0; j < count; j++) {
        const uint16_t *row = atoms + j * lanes * 16;
        __m512 x[4];
        for (long i = 0; i < lanes; i++) x[i] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 16 * i)));
        for (long r = 0; r < rows; r++) {
            __m512 c = _mm512_set1_ps(w[r * wStride + j]);
            for (long i = 0; i < lanes; i++) acc[r][i] = _mm512_fmadd_ps(c, x[i], acc[r][i]);
        }
    }
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < lanes; i++) _mm512_storeu_ps(out + r * outStride + 16 * i, acc[r][i]);
}

// The dictionary product that turns atom-space accumulators into channels, for `rows` <= 4
// query rows in one pass over the fp16 atoms (each atom row converted once for all of them):
// out[r * outStride + i] += sum over atoms j in order of w[r * wStride + j] * atom[j][i],
// one fused multiply-add per atom and lane from out's value, as `Kernels.sumOfHalfRows`
// does row by row (the same bits). m = 32 or 64 channels; rows 1 ... 4.
__attribute__((target("avx512f,f16c,fma")))
static inline void sparsekv_half_atoms_product_avx512(const uint16_t *atoms, long count, long m, const float *w, long wStride,
                                                      long rows, float *out, long outStride) {
#define SPARSEKV_PRODUCT(R, L) sparsekv_half_atoms_product_fixed(atoms, count, w, wStride, out, outStride, R, L)
    if (m == 64) {
        switch (rows) {
        case 1: SPARSEKV_PRODUCT(1, 4); break;
        case 2: SPARSEKV_PRODUCT(2, 4); break;
        case 3: SPARSEKV_PRODUCT(3, 4); break;
        default: SPARSEKV_PRODUCT(4, 4); break;
        }
    } else {
        switch (rows) {
        case 1: SPARSEKV_PRODUCT(1, 2); break;
        case 2: SPARSEKV_PRODUCT(2, 2); break;
        case 3: SPARSEKV_PRODUCT(3, 2); break;
        default: SPARSEKV_PRODUCT(4, 2); break;
        }
    }
#undef SPARSEKV_PRODUCT
}

#endif  // __x86_64__
