// CSR key scoring on fixed-point atoms (CSRCache+Attention.swift, CSRCodeStream.swift).
//
// A key stream with int8 coefficients rebuilds a row as w * sum_k q_k * A[a_k], where q_k are
// the row's int8 coefficients, w = scale * 2^-shift (the row's fp16 scale) and A the atoms
// as int16 fixed point (round(atom * 2^shift)). The sum is an exact int32, so every way of
// computing it gives the same number; the float steps after it (convert, times w, RoPE, the
// query dot) are written once per lane and done in the same order by the three versions
// below (portable C, AVX2, AVX-512 VNNI), which therefore give the same bits.
//
// Stored order of a fixed-point atom row (m = 32 or 64 int16): in each 32-word block z, the
// 128-bit lane L (words 8L ... 8L + 7) holds the even channels 32z + 8L, + 2, + 4, + 6, then
// the odd ones 32z + 8L + 1, + 3, + 5, + 7. Interleaving two atoms' words
// (unpacklo/unpackhi_epi16) then splits a block's RoPE pairs: in 512-bit registers, unpacklo
// of block z gives the even channels 32z + 2i of its 16 pairs (lane i) and unpackhi the odd
// ones 32z + 2i + 1, each channel as the pair (A[c], B[c]) that one vpdpwssd multiplies by
// the coefficients (qA, qB). RoPE then needs no shuffle: a pair's two channels sit in the
// same lane of two registers.
//
// Split order of a 64-channel row (the rotated key, the query rows, the RoPE table row):
// position i holds channel sparsekv_split_channel(i): the even channels of pairs 0 ... 15,
// their odd channels, the even channels of pairs 16 ... 31, their odd channels. A RoPE table
// row in split order is (cos of pairs 0 ... 15, their sin, cos of pairs 16 ... 31, their
// sin).
//
// Header only: Swift compiles these inline functions itself; the target attributes let the
// AVX2 and AVX-512 versions be compiled into a build for any x86-64 CPU. They run only after
// the CPU checks said yes.
#pragma once
#include <stdint.h>
#include <math.h>
#include "correlate_avx512.h"
#include "csr_codes.h"

// The stored word position of channel c in a fixed-point atom row.
static inline long sparsekv_fixed_position(long c) {
    long z = c / 32, r = c % 32;
    return 32 * z + 8 * (r / 8) + 4 * (r % 2) + r % 8 / 2;
}

// The channel at position i (0 ... 63) of a row in split order.
static inline long sparsekv_split_channel(long i) {
    return 32 * (i / 32) + 2 * (i % 16) + i % 32 / 16;
}

// Exact int32 sums of one row chunk: sums[c] = sum_k q[k] * A[idx[k]][c] for the m channels
// in natural order.
static inline void sparsekv_fixed_sums(const int16_t *atoms, long m, long s, const int32_t *idx, const int8_t *q,
                                       int32_t *sums) {
    for (long c = 0; c < m; c++) sums[c] = 0;
    for (long k = 0; k < s; k++) {
        const int16_t *a = atoms + (long)idx[k] * m;
        for (long c = 0; c < m; c++) sums[c] += (int32_t)q[k] * (int32_t)a[sparsekv_fixed_position(c)];
    }
}

// Rows of one stream decoded to floats: out[r * m + c] = (float)sums * w_r, w_r = the row's
// fp16 scale times unit. idx and q hold `rows` rows of s pairs one after another.
static inline void sparsekv_fixed_rows(const int16_t *atoms, long m, long s, const int32_t *idx, const int8_t *q,
                                       const uint16_t *scales, float unit, long rows, float *out) {
#pragma clang fp contract(off)
    int32_t sums[64];
    for (long r = 0; r < rows; r++) {
        sparsekv_fixed_sums(atoms, m, s, idx + r * s, q + r * s, sums);
        float w = sparsekv_half_to_float(scales[r]) * unit;
        for (long c = 0; c < m; c++) out[r * m + c] = (float)sums[c] * w;
    }
}

// The arguments of the block kernels: n <= 8 positions of one KV head, 64 channels each
// (64 / m chunks of s pairs), scored against `rows` query rows.
//   idx      (n, 64 / m, s) atom indices, unpacked
//   coef     int8 coefficients of the block's first position; position j's chunk c at
//            coef + j * coefStride + c * s
//   scales   fp16 row scales; position j's chunk c at scales[j * scaleStride + c]
//   rope     the first position's RoPE row in split order (64 floats: cos and sin of its
//            32 pairs); position j's at rope + 64 * j
//   queries  `rows` pointers to 64 floats in split order
//   skip     bit j set: position j is not computed (its partials are left as they are)
//   partial  (rows, 8, 16) floats: partial[(r * 8 + j) * 16 + l] = p[l], lane l of position j's
//            product with query row r, the sum over the split positions i = l mod 16
// Per lane, in this order: x = (float)sum * w; RoPE on each pair (e, o) with its (cos, sin):
// e' = e cos - o sin, o' = o cos + e sin, products rounded apart; then, with x' and the query
// in split order, for l in 0 ..< 16 the product chain p[l] = q[l] x'[l],
// p[l] = fma(q[16k + l], x'[16k + l], p[l]) for k = 1, 2, 3. The finish (sparsekv_fold16)
// adds p[i] + p[i + 8], then folds the eight: the kernels store the 16 lanes as they are, so
// that the AVX-512 one needs no shuffle per position and query row for that add.
typedef struct {
    const int16_t *atoms;
    long m, s;
    const int32_t *idx;
    const int8_t *coef;
    long coefStride;
    const uint16_t *scales;
    long scaleStride;
    float unit;
    const float *rope;
    const float *const *queries;
    long rows, n;
    unsigned skip;
    float *partial;
} sparsekv_key_block;

// The portable version: the definition the vector versions are tested against.
static inline void sparsekv_key_partials_portable(const sparsekv_key_block *b) {
#pragma clang fp contract(off)
    long chunks = 64 / b->m;
    for (long j = 0; j < b->n; j++) {
        if (b->skip >> j & 1) continue;
        float x[64], y[64];
        int32_t sums[64];
        for (long c = 0; c < chunks; c++) {
            sparsekv_fixed_sums(b->atoms, b->m, b->s, b->idx + (j * chunks + c) * b->s, b->coef + j * b->coefStride + c * b->s, sums);
            float w = sparsekv_half_to_float(b->scales[j * b->scaleStride + c]) * b->unit;
            for (long i = 0; i < b->m; i++) x[c * b->m + i] = (float)sums[i] * w;
        }
        // y: the rotated row in split order.
        const float *t = b->rope + 64 * j;
        for (long p = 0; p < 32; p++) {
            long ie = 32 * (p / 16) + p % 16, io = ie + 16;
            float cs = t[ie], sn = t[io], e = x[2 * p], o = x[2 * p + 1];
            float a = e * cs, bb = o * sn, c2 = o * cs, d = e * sn;
            y[ie] = a - bb;
            y[io] = c2 + d;
        }
        for (long r = 0; r < b->rows; r++) {
            const float *q = b->queries[r];
            float *out = b->partial + (r * 8 + j) * 16;
            for (long l = 0; l < 16; l++) {
                float acc = q[l] * y[l];
                for (long k = 1; k < 4; k++) acc = fmaf(q[16 * k + l], y[16 * k + l], acc);
                out[l] = acc;
            }
        }
    }
}

#if defined(__x86_64__)

// Whether this CPU runs AVX2, FMA and F16C (the AVX2 version), from CPUID and XCR0.
static inline int sparsekv_cpu_has_avx2(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & (1u << 27)) || !(c & (1u << 12)) || !(c & (1u << 29))) return 0;  // OSXSAVE, FMA, F16C
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0x6u) != 0x6u) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & (1u << 5)) != 0;
}

// Whether this CPU runs the AVX-512 version: AVX-512F, BW and VNNI (CPUID leaf 7 EBX bits
// 16 and 30, ECX bit 11), with the 512-bit registers saved by the OS.
static inline int sparsekv_cpu_has_avx512vnni(void) {
    if (!sparsekv_cpu_has_avx512f() || !sparsekv_cpu_has_avx2()) return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & (1u << 30)) && (c & (1u << 11));
}

// The coefficient pair (qa, qb) as one dword: qa in the low word, qb in the high.
static inline int sparsekv_coefficient_pair(int8_t qa, int8_t qb) {
    return (int)((uint32_t)(uint16_t)(int16_t)qa | ((uint32_t)(uint16_t)(int16_t)qb << 16));
}

#define SPARSEKV_AVX2_TARGET __attribute__((target("avx2,fma,f16c"), always_inline))

// RoPE on 8 pairs: e holds their even channels and o their odd ones (split order); cs and sn
// point at their cos and sin in the position's table row. e' = e cos - o sin, o' = o cos + e sin.
SPARSEKV_AVX2_TARGET
static inline void sparsekv_rotate8_pairs(__m256 *e, __m256 *o, const float *cs, const float *sn) {
#pragma clang fp contract(off)
    __m256 c = _mm256_loadu_ps(cs), s = _mm256_loadu_ps(sn), x = *e, y = *o;
    *e = _mm256_sub_ps(_mm256_mul_ps(x, c), _mm256_mul_ps(y, s));
    *o = _mm256_add_ps(_mm256_mul_ps(y, c), _mm256_mul_ps(x, s));
}

// One 32-channel block's int32 sums over s pairs, in split order: lo gets the even channels
// of pairs 0 ... 7 and 8 ... 15 (l0, l1), hi their odd channels (h0, h1).
SPARSEKV_AVX2_TARGET
static inline void sparsekv_sums32_avx2(const int16_t *atoms, long m, long off, long s, const int32_t *idx, const int8_t *q,
                                        __m256i *l0, __m256i *l1, __m256i *h0, __m256i *h1) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0;
    long k = 0;
    for (; k + 1 < s; k += 2) {
        const int16_t *A = atoms + (long)idx[k] * m + off, *B = atoms + (long)idx[k + 1] * m + off;
        __m256i w = _mm256_set1_epi32(sparsekv_coefficient_pair(q[k], q[k + 1]));
        __m256i x = _mm256_loadu_si256((const __m256i *)A), y = _mm256_loadu_si256((const __m256i *)B);
        __m256i x2 = _mm256_loadu_si256((const __m256i *)(A + 16)), y2 = _mm256_loadu_si256((const __m256i *)(B + 16));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi16(x, y), w));
        b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(_mm256_unpackhi_epi16(x, y), w));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpacklo_epi16(x2, y2), w));
        b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(_mm256_unpackhi_epi16(x2, y2), w));
    }
    if (k < s) {
        const int16_t *A = atoms + (long)idx[k] * m + off;
        __m256i w = _mm256_set1_epi32(sparsekv_coefficient_pair(q[k], 0)), z = _mm256_setzero_si256();
        __m256i x = _mm256_loadu_si256((const __m256i *)A), x2 = _mm256_loadu_si256((const __m256i *)(A + 16));
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi16(x, z), w));
        b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(_mm256_unpackhi_epi16(x, z), w));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpacklo_epi16(x2, z), w));
        b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(_mm256_unpackhi_epi16(x2, z), w));
    }
    *l0 = a0; *l1 = a1; *h0 = b0; *h1 = b1;
}

// A 64-channel row's int32 sums over s pairs in one pass, in split order: v[i] gets split
// positions 8i ... 8i + 7.
SPARSEKV_AVX2_TARGET
static inline void sparsekv_sums64_avx2(const int16_t *atoms, long s, const int32_t *idx, const int8_t *q, __m256i *v) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (long k = 0; k < s; k += 2) {
        const int16_t *A = atoms + (long)idx[k] * 64, *B = A;
        int8_t qb = 0;
        if (k + 1 < s) {
            B = atoms + (long)idx[k + 1] * 64;
            qb = q[k + 1];
        }
        // A lone last pair goes with itself and a zero coefficient.
        __m256i w = _mm256_set1_epi32(sparsekv_coefficient_pair(q[k], qb));
#define SPARSEKV_QUARTER(o, lo8, hi8, lo8b, hi8b)                                                        \
        {                                                                                              \
            __m256i x = _mm256_loadu_si256((const __m256i *)(A + o)), y = _mm256_loadu_si256((const __m256i *)(B + o));           \
            __m256i x2 = _mm256_loadu_si256((const __m256i *)(A + o + 16)), y2 = _mm256_loadu_si256((const __m256i *)(B + o + 16)); \
            lo8 = _mm256_add_epi32(lo8, _mm256_madd_epi16(_mm256_unpacklo_epi16(x, y), w));            \
            hi8 = _mm256_add_epi32(hi8, _mm256_madd_epi16(_mm256_unpackhi_epi16(x, y), w));            \
            lo8b = _mm256_add_epi32(lo8b, _mm256_madd_epi16(_mm256_unpacklo_epi16(x2, y2), w));        \
            hi8b = _mm256_add_epi32(hi8b, _mm256_madd_epi16(_mm256_unpackhi_epi16(x2, y2), w));        \
        }
        SPARSEKV_QUARTER(0, a0, a2, a1, a3)
        SPARSEKV_QUARTER(32, a4, a6, a5, a7)
#undef SPARSEKV_QUARTER
    }
    v[0] = a0; v[1] = a1; v[2] = a2; v[3] = a3; v[4] = a4; v[5] = a5; v[6] = a6; v[7] = a7;
}

// sparsekv_fixed_rows with 256-bit vectors (AVX2, FMA, F16C).
__attribute__((target("avx2,fma,f16c")))
static inline void sparsekv_fixed_rows_avx2(const int16_t *atoms, long m, long s, const int32_t *idx, const int8_t *q,
                                            const uint16_t *scales, float unit, long rows, float *out) {
#pragma clang fp contract(off)
    for (long r = 0; r < rows; r++) {
        __m256 w = _mm256_set1_ps(_cvtsh_ss(scales[r]) * unit);
        __m256i v[8];  // split positions 8i ... 8i + 7
        // A 64-channel row in one pass over its pairs, a 32-channel one as its block.
        if (m == 64) sparsekv_sums64_avx2(atoms, s, idx + r * s, q + r * s, v);
        else sparsekv_sums32_avx2(atoms, 32, 0, s, idx + r * s, q + r * s, &v[0], &v[1], &v[2], &v[3]);
        // Each 32-channel block (v[4z] ... v[4z + 3]: even channels of 8 + 8 pairs, then odd)
        // back to natural order: pairs 8h ... 8h + 7 are channels 32z + 16h ... + 15.
        for (long z = 0; z < m / 32; z++) {
            for (long h = 0; h < 2; h++) {
                __m256 e = _mm256_mul_ps(_mm256_cvtepi32_ps(v[4 * z + h]), w), o = _mm256_mul_ps(_mm256_cvtepi32_ps(v[4 * z + 2 + h]), w);
                __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
                _mm256_storeu_ps(out + r * m + 32 * z + 16 * h, _mm256_permute2f128_ps(lo, hi, 0x20));
                _mm256_storeu_ps(out + r * m + 32 * z + 16 * h + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
            }
        }
    }
}

// sparsekv_key_partials_portable with 256-bit vectors (AVX2, FMA, F16C).
__attribute__((target("avx2,fma,f16c")))
static inline void sparsekv_key_partials_avx2(const sparsekv_key_block *b) {
#pragma clang fp contract(off)
    long chunks = 64 / b->m;
    for (long j = 0; j < b->n; j++) {
        if (b->skip >> j & 1) continue;
        __m256i v[8];  // split positions 8i ... 8i + 7
        if (chunks == 1) sparsekv_sums64_avx2(b->atoms, b->s, b->idx + j * b->s, b->coef + j * b->coefStride, v);
        else for (long h = 0; h < 2; h++) {
            // Two chunks of 32 channels: chunk h holds split positions 32h ... 32h + 31.
            sparsekv_sums32_avx2(b->atoms, 32, 0, b->s, b->idx + (j * 2 + h) * b->s, b->coef + j * b->coefStride + h * b->s,
                                 &v[4 * h], &v[4 * h + 1], &v[4 * h + 2], &v[4 * h + 3]);
        }
        const float *t = b->rope + 64 * j;
        __m256 y[8];
        for (long i = 0; i < 8; i++) {
            long c = chunks == 2 ? i / 4 : 0;
            __m256 w = _mm256_set1_ps(_cvtsh_ss(b->scales[j * b->scaleStride + c]) * b->unit);
            y[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(v[i]), w);
        }
        // In each 32-channel block z, y[4z + h] holds the even channels of pairs 16z + 8h ...
        // + 7 and y[4z + 2 + h] their odd ones; their cos and sin are 16 apart in the table row.
        for (long z = 0; z < 2; z++)
            for (long h = 0; h < 2; h++)
                sparsekv_rotate8_pairs(&y[4 * z + h], &y[4 * z + 2 + h], t + 32 * z + 8 * h, t + 32 * z + 8 * h + 16);
        for (long r = 0; r < b->rows; r++) {
            const float *q = b->queries[r];
            // p[l] for l < 8 (lo) and 8 <= l < 16 (hi): channels 16k + l over k.
            __m256 lo = _mm256_mul_ps(_mm256_loadu_ps(q), y[0]), hi = _mm256_mul_ps(_mm256_loadu_ps(q + 8), y[1]);
            for (long k = 1; k < 4; k++) {
                lo = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16 * k), y[2 * k], lo);
                hi = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16 * k + 8), y[2 * k + 1], hi);
            }
            _mm256_storeu_ps(b->partial + (r * 8 + j) * 16, lo);
            _mm256_storeu_ps(b->partial + (r * 8 + j) * 16 + 8, hi);
        }
    }
}

#define SPARSEKV_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c"), always_inline))

// One 32-channel block's int32 sums over s pairs, in split order: lo gets the even channels
// of its 16 pairs, hi the odd ones.
// Two sets of accumulators (pairs of pairs alternate) keep two vpdpwssd chains in flight;
// integer sums do not depend on the order.
SPARSEKV_AVX512_TARGET
static inline void sparsekv_sums32_avx512(const int16_t *atoms, long m, long off, long s, const int32_t *idx,
                                          const int8_t *q, __m512i *lo, __m512i *hi) {
    __m512i a0 = _mm512_setzero_si512(), b0 = a0, a1 = a0, b1 = a0;
    long k = 0;
    for (; k + 3 < s; k += 4) {
        const int16_t *A = atoms + (long)idx[k] * m + off, *B = atoms + (long)idx[k + 1] * m + off;
        const int16_t *C = atoms + (long)idx[k + 2] * m + off, *D = atoms + (long)idx[k + 3] * m + off;
        __m512i x = _mm512_loadu_si512(A), y = _mm512_loadu_si512(B);
        __m512i u = _mm512_loadu_si512(C), v = _mm512_loadu_si512(D);
        __m512i w = _mm512_set1_epi32(sparsekv_coefficient_pair(q[k], q[k + 1]));
        __m512i w2 = _mm512_set1_epi32(sparsekv_coefficient_pair(q[k + 2], q[k + 3]));
        a0 = _mm512_dpwssd_epi32(a0, _mm512_unpacklo_epi16(x, y), w);
        b0 = _mm512_dpwssd_epi32(b0, _mm512_unpackhi_epi16(x, y), w);
        a1 = _mm512_dpwssd_epi32(a1, _mm512_unpacklo_epi16(u, v), w2);
        b1 = _mm512_dpwssd_epi32(b1, _mm512_unpackhi_epi16(u, v), w2);
    }
    for (; k < s; k += 2) {
        const int16_t *A = atoms + (long)idx[k] * m + off;
        __m512i x = _mm512_loadu_si512(A), y = _mm512_setzero_si512();
        int8_t qb = 0;
        if (k + 1 < s) {
            y = _mm512_loadu_si512(atoms + (long)idx[k + 1] * m + off);
            qb = q[k + 1];
        }
        __m512i w = _mm512_set1_epi32(sparsekv_coefficient_pair(q[k], qb));
        a0 = _mm512_dpwssd_epi32(a0, _mm512_unpacklo_epi16(x, y), w);
        b0 = _mm512_dpwssd_epi32(b0, _mm512_unpackhi_epi16(x, y), w);
    }
    *lo = _mm512_add_epi32(a0, a1);
    *hi = _mm512_add_epi32(b0, b1);
}

// A 64-channel row's int32 sums over s pairs in one pass: v0 ... v3 get split positions 0-15,
// 16-31, 32-47, 48-63. Pairs of pairs alternate between two sets of accumulators.
SPARSEKV_AVX512_TARGET
static inline void sparsekv_sums64_avx512(const int16_t *atoms, long s, const int32_t *idx, const int8_t *q,
                                          __m512i *v0, __m512i *v1, __m512i *v2, __m512i *v3) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    long k = 0;
    for (; k + 3 < s; k += 4) {
        const int16_t *A = atoms + (long)idx[k] * 64, *B = atoms + (long)idx[k + 1] * 64;
        const int16_t *C = atoms + (long)idx[k + 2] * 64, *D = atoms + (long)idx[k + 3] * 64;
        __m512i w = _mm512_set1_epi32(sparsekv_coefficient_pair(q[k], q[k + 1]));
        __m512i w2 = _mm512_set1_epi32(sparsekv_coefficient_pair(q[k + 2], q[k + 3]));
        __m512i x = _mm512_loadu_si512(A), y = _mm512_loadu_si512(B);
        __m512i x1 = _mm512_loadu_si512(A + 32), y1 = _mm512_loadu_si512(B + 32);
        a0 = _mm512_dpwssd_epi32(a0, _mm512_unpacklo_epi16(x, y), w);
        a1 = _mm512_dpwssd_epi32(a1, _mm512_unpackhi_epi16(x, y), w);
        a2 = _mm512_dpwssd_epi32(a2, _mm512_unpacklo_epi16(x1, y1), w);
        a3 = _mm512_dpwssd_epi32(a3, _mm512_unpackhi_epi16(x1, y1), w);
        __m512i u = _mm512_loadu_si512(C), t = _mm512_loadu_si512(D);
        __m512i u1 = _mm512_loadu_si512(C + 32), t1 = _mm512_loadu_si512(D + 32);
        b0 = _mm512_dpwssd_epi32(b0, _mm512_unpacklo_epi16(u, t), w2);
        b1 = _mm512_dpwssd_epi32(b1, _mm512_unpackhi_epi16(u, t), w2);
        b2 = _mm512_dpwssd_epi32(b2, _mm512_unpacklo_epi16(u1, t1), w2);
        b3 = _mm512_dpwssd_epi32(b3, _mm512_unpackhi_epi16(u1, t1), w2);
    }
    for (; k < s; k += 2) {
        const int16_t *A = atoms + (long)idx[k] * 64;
        __m512i x = _mm512_loadu_si512(A), x1 = _mm512_loadu_si512(A + 32), y = _mm512_setzero_si512(), y1 = y;
        int8_t qb = 0;
        if (k + 1 < s) {
            const int16_t *B = atoms + (long)idx[k + 1] * 64;
            y = _mm512_loadu_si512(B);
            y1 = _mm512_loadu_si512(B + 32);
            qb = q[k + 1];
        }
        __m512i w = _mm512_set1_epi32(sparsekv_coefficient_pair(q[k], qb));
        a0 = _mm512_dpwssd_epi32(a0, _mm512_unpacklo_epi16(x, y), w);
        a1 = _mm512_dpwssd_epi32(a1, _mm512_unpackhi_epi16(x, y), w);
        a2 = _mm512_dpwssd_epi32(a2, _mm512_unpacklo_epi16(x1, y1), w);
        a3 = _mm512_dpwssd_epi32(a3, _mm512_unpackhi_epi16(x1, y1), w);
    }
    *v0 = _mm512_add_epi32(a0, b0);
    *v1 = _mm512_add_epi32(a1, b1);
    *v2 = _mm512_add_epi32(a2, b2);
    *v3 = _mm512_add_epi32(a3, b3);
}

// RoPE on 16 pairs: e holds their even channels and o their odd ones (split order), t their
// cos (16 floats) then sin. e' = e cos - o sin, o' = o cos + e sin.
SPARSEKV_AVX512_TARGET
static inline void sparsekv_rotate16_pairs(__m512 *e, __m512 *o, const float *t) {
#pragma clang fp contract(off)
    __m512 c = _mm512_loadu_ps(t), s = _mm512_loadu_ps(t + 16), x = *e, y = *o;
    *e = _mm512_sub_ps(_mm512_mul_ps(x, c), _mm512_mul_ps(y, s));
    *o = _mm512_add_ps(_mm512_mul_ps(y, c), _mm512_mul_ps(x, s));
}

// sparsekv_key_partials_portable with 512-bit vectors and vpdpwssd, with the number of query
// rows R (1 ... 4) a constant once inlined: the row loop unrolls and the rows' 4 x R query
// vectors are loaded once per block and stay in registers. R = 0: b->rows rows, read from
// memory per position.
SPARSEKV_AVX512_TARGET
static inline void sparsekv_key_partials_avx512_rows(const sparsekv_key_block *b, const long R) {
#pragma clang fp contract(off)
    long chunks = 64 / b->m, rows = R > 0 ? R : b->rows;
    __m512 qv[4][4];
    for (long r = 0; r < R; r++)
        for (long i = 0; i < 4; i++) qv[r][i] = _mm512_loadu_ps(b->queries[r] + 16 * i);
    for (long j = 0; j < b->n; j++) {
        if (b->skip >> j & 1) continue;
        __m512i v0, v1, v2, v3;  // split positions 0-15, 16-31, 32-47, 48-63
        const int32_t *ix = b->idx + j * chunks * b->s;
        const int8_t *q = b->coef + j * b->coefStride;
        if (chunks == 1) {
            sparsekv_sums64_avx512(b->atoms, b->s, ix, q, &v0, &v1, &v2, &v3);
        } else {
            sparsekv_sums32_avx512(b->atoms, 32, 0, b->s, ix, q, &v0, &v1);
            sparsekv_sums32_avx512(b->atoms, 32, 0, b->s, ix + b->s, q + b->s, &v2, &v3);
        }
        const uint16_t *sc = b->scales + j * b->scaleStride;
        __m512 w0 = _mm512_set1_ps(_cvtsh_ss(sc[0]) * b->unit);
        __m512 w1 = chunks == 2 ? _mm512_set1_ps(_cvtsh_ss(sc[1]) * b->unit) : w0;
        const float *t = b->rope + 64 * j;
        __m512 y0 = _mm512_mul_ps(_mm512_cvtepi32_ps(v0), w0), y1 = _mm512_mul_ps(_mm512_cvtepi32_ps(v1), w0);
        __m512 y2 = _mm512_mul_ps(_mm512_cvtepi32_ps(v2), w1), y3 = _mm512_mul_ps(_mm512_cvtepi32_ps(v3), w1);
        sparsekv_rotate16_pairs(&y0, &y1, t);
        sparsekv_rotate16_pairs(&y2, &y3, t + 32);
        for (long r = 0; r < rows; r++) {
            const float *qr = b->queries[r];
            __m512 q0 = R > 0 ? qv[r][0] : _mm512_loadu_ps(qr), q1 = R > 0 ? qv[r][1] : _mm512_loadu_ps(qr + 16);
            __m512 q2 = R > 0 ? qv[r][2] : _mm512_loadu_ps(qr + 32), q3 = R > 0 ? qv[r][3] : _mm512_loadu_ps(qr + 48);
            __m512 p = _mm512_mul_ps(q0, y0);
            p = _mm512_fmadd_ps(q1, y1, p);
            p = _mm512_fmadd_ps(q2, y2, p);
            p = _mm512_fmadd_ps(q3, y3, p);
            _mm512_storeu_ps(b->partial + (r * 8 + j) * 16, p);
        }
    }
}

// The AVX-512 block kernel: up to 4 query rows (a decode step of one token has 3 per KV
// head) with the row count fixed, more (several tokens at once) with the rows read per
// position.
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")))
static inline void sparsekv_key_partials_avx512(const sparsekv_key_block *b) {
    switch (b->rows) {
    case 1: sparsekv_key_partials_avx512_rows(b, 1); break;
    case 2: sparsekv_key_partials_avx512_rows(b, 2); break;
    case 3: sparsekv_key_partials_avx512_rows(b, 3); break;
    case 4: sparsekv_key_partials_avx512_rows(b, 4); break;
    default: sparsekv_key_partials_avx512_rows(b, 0); break;
    }
}

// The products of a block's eight positions against query row r (partial + r * 128) finished:
// position j's eight partial sums s_j = lanes 0 ... 7 + lanes 8 ... 15 of its product
// (Row64.partialDot's lanes), then folded as `transposedSums` (DotsOfEight.swift) folds them,
// the same adds in the same order: lane j of ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7)).
SPARSEKV_AVX2_TARGET
static inline __m256 sparsekv_fold16_avx2(const float *p) {
#define SPARSEKV_HALF_SUM(j) _mm256_add_ps(_mm256_loadu_ps(p + 16 * j), _mm256_loadu_ps(p + 16 * j + 8))
    __m256 s0 = SPARSEKV_HALF_SUM(0), s1 = SPARSEKV_HALF_SUM(1), s2 = SPARSEKV_HALF_SUM(2), s3 = SPARSEKV_HALF_SUM(3);
    __m256 s4 = SPARSEKV_HALF_SUM(4), s5 = SPARSEKV_HALF_SUM(5), s6 = SPARSEKV_HALF_SUM(6), s7 = SPARSEKV_HALF_SUM(7);
#undef SPARSEKV_HALF_SUM
#define SPARSEKV_HALVES(a, b) _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31))
#define SPARSEKV_PAIRS(a, b) _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_hadd_ps(a, b)), 0xD8))
    __m256 p01 = SPARSEKV_HALVES(s0, s1), p23 = SPARSEKV_HALVES(s2, s3), p45 = SPARSEKV_HALVES(s4, s5), p67 = SPARSEKV_HALVES(s6, s7);
    __m256 out = SPARSEKV_PAIRS(SPARSEKV_PAIRS(p01, p23), SPARSEKV_PAIRS(p45, p67));
#undef SPARSEKV_HALVES
#undef SPARSEKV_PAIRS
    return out;
}

// Scores of n <= 8 positions from their products: scores[r * stride + j].
__attribute__((target("avx2,fma,f16c")))
static inline void sparsekv_finish_avx2(const float *partial, long rows, long n, float scale, float *scores, long stride) {
    float out[8];
    for (long r = 0; r < rows; r++) {
        _mm256_storeu_ps(out, _mm256_mul_ps(sparsekv_fold16_avx2(partial + r * 128), _mm256_set1_ps(scale)));
        for (long j = 0; j < n; j++) scores[r * stride + j] = out[j];
    }
}

#endif  // __x86_64__

// The same finish one position at a time (the portable version), from its 16 lanes p.
static inline float sparsekv_fold16(const float *p) {
#pragma clang fp contract(off)
    float s[8];
    for (long i = 0; i < 8; i++) s[i] = p[i] + p[i + 8];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

// A run of positions whose keys are all codes (no guard rows, not the latest append's exact
// rows), scored in blocks of eight: each block's indices are unpacked, its partial products
// formed by the level's block kernel and finished into scores[r * stride + t] = scale *
// (query row r . key t). The block's coef, scales, rope, idx, n and skip are set here; the
// rest of `block` is the run's: coef, scales and rope point at position 0's, and idx at room
// for 8 * (64 / m) * s indices.
typedef struct {
    sparsekv_key_block block;
    const uint8_t *indexBytes;
    long indexByteCount, width, kvHeads, head;
    float scale;
    float *scores;
    long stride;
    int level;  // 0 portable, 1 AVX2, 2 AVX-512 VNNI (CSRKeyKernels.Level)
    int vbmi;   // 1: indices unpacked with vpermb (s <= 16, width <= 16, AVX-512 VBMI checked)
} sparsekv_key_run;

#if defined(__x86_64__)
// The indices of positions b0 ... b0 + n - 1 of the run's head into idx ((n, 64 / m, s)):
// the values sparsekv_unpack_indices gives. A position's chunk rows are contiguous in the
// stream, so with at most 16 pairs a position one vpermb unpack reads all of them, and two
// positions' when `two` (csr:8's keys: 8 pairs of 10 bits, 24 pairs apart), at the lane
// offsets `offs` (sparsekv_position_offsets); else one per chunk row. A whole block is
// unpacked before the block kernel reads an index back: a scalar load right after the
// vector store that wrote it would wait for the store to reach the cache.
__attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vl")))
static inline void sparsekv_key_indices_avx512(const sparsekv_key_run *a, long b0, long n, int32_t *idx, const int32_t *offs,
                                               int two) {
    long chunks = 64 / a->block.m, s = a->block.s, pp = chunks * s, w = a->width;
    if (pp <= 16) {
        __m512i off = _mm512_loadu_si512(offs);
        __mmask16 one = (__mmask16)((1u << pp) - 1), both = two ? (__mmask16)((1u << (2 * pp)) - 1) : one;
        long stride = a->kvHeads * pp;
        for (long j = 0; j < n; j += two ? 2 : 1) {
            long first = ((b0 + j) * a->kvHeads + a->head) * pp;
            int pair = two && j + 1 < n;
            __m512i v = sparsekv_indices_at_avx512(a->indexBytes, a->indexByteCount, w, first * w,
                                                   (pair ? stride + pp : pp) * w, off, pair ? both : one);
            _mm512_mask_storeu_epi32(idx + j * pp, pair ? both : one, v);
        }
        return;
    }
    __mmask16 lanes = (__mmask16)((1u << s) - 1);
    for (long j = 0; j < n; j++) {
        long row0 = ((b0 + j) * a->kvHeads + a->head) * chunks;
        for (long c = 0; c < chunks; c++) {
            __m512i v = sparsekv_indices16_avx512(a->indexBytes, a->indexByteCount, w, (row0 + c) * s, s);
            _mm512_mask_storeu_epi32(idx + (j * chunks + c) * s, lanes, v);
        }
    }
}
#endif

static inline void sparsekv_key_scores(const sparsekv_key_run *a, long t0, long t1) {
#pragma clang fp contract(off)
    sparsekv_key_block b = a->block;
    long chunks = 64 / b.m, s = b.s, perPosition = chunks * s, rows = b.rows;
    int32_t *idx = (int32_t *)a->block.idx;
#if defined(__x86_64__)
    int32_t offs[16];
    int two = sparsekv_position_offsets(perPosition, a->kvHeads * perPosition, a->width, offs);
#endif
    for (long b0 = t0; b0 < t1; b0 += 8) {
        long n = t1 - b0 < 8 ? t1 - b0 : 8, row0 = (b0 * a->kvHeads + a->head) * chunks;
#if defined(__x86_64__)
        if (a->vbmi) sparsekv_key_indices_avx512(a, b0, n, idx, offs, two);
        else
#endif
        for (long j = 0; j < n; j++) {
            long first = ((b0 + j) * a->kvHeads + a->head) * chunks * s;
            sparsekv_unpack_indices(a->indexBytes, a->indexByteCount, a->width, first, perPosition, idx + j * perPosition);
        }
        b.coef = a->block.coef + row0 * s;
        b.scales = a->block.scales + row0;
        b.rope = a->block.rope + b0 * 64;
        b.n = n;
        b.skip = 0;
#if defined(__x86_64__)
        if (a->level == 2) sparsekv_key_partials_avx512(&b);
        else if (a->level == 1) sparsekv_key_partials_avx2(&b);
        else sparsekv_key_partials_portable(&b);
        if (a->level > 0) {
            sparsekv_finish_avx2(b.partial, rows, n, a->scale, a->scores + b0, a->stride);
            continue;
        }
#else
        sparsekv_key_partials_portable(&b);
#endif
        for (long r = 0; r < rows; r++) {
            for (long j = 0; j < n; j++) a->scores[r * a->stride + b0 + j] = sparsekv_fold16(b.partial + (r * 8 + j) * 16) * a->scale;
        }
    }
}
