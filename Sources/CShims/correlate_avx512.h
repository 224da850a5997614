// The Gram-free pursuit's correlation kernel (PursuitKernels+Correlate.swift) with 512-bit
// vectors, for CPUs that have AVX-512F. Header only: Swift compiles these inline functions
// itself, and the target attribute lets them use AVX-512 in a build for AVX2 CPUs. They run
// only after sparsekv_cpu_has_avx512f() said yes.
//
// A panel holds 16 atoms channel by channel, so one panel channel is one 512-bit vector
// (the AVX2 kernel reads it as two 256-bit halves). Every output is the same chain of fused
// multiply-adds over the channels in order, from zero, as in the Swift kernel, so the two
// give the same bits.
#pragma once
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

// Whether this CPU runs AVX-512F and the OS saves the 512-bit registers (CPUID leaf 7 EBX
// bit 16; OSXSAVE, and XCR0 bits 1, 2, 5, 6, 7).
static inline int sparsekv_cpu_has_avx512f(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6u) != 0xE6u) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & (1u << 16)) != 0;
}

// Rows R (1 ... 4, a constant once inlined) against the panels from p0 on: four panels
// (P = 4) or one (P = 1). Each accumulator is its own variable, so that it lives in a
// register (an array of them was kept on the stack). out is (R, n) row-major; results
// past n (the zero atoms padding the last panel) are not stored.
__attribute__((target("avx512f"), always_inline))
static inline void sparsekv_correlate_block(const float *panels, long p0, int P, long n, long m,
                                            const float *x, int R, float *out) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
    __m512 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    __m512 c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    const float *d = panels + p0 * 16 * m;
    const long stride = 16 * m;
    for (long i = 0; i < m; i++) {
        const float *q = d + i * 16;
        __m512 l0 = _mm512_loadu_ps(q), l1 = l0, l2 = l0, l3 = l0;
        if (P == 4) {
            l1 = _mm512_loadu_ps(q + stride);
            l2 = _mm512_loadu_ps(q + 2 * stride);
            l3 = _mm512_loadu_ps(q + 3 * stride);
        }
#define SPARSEKV_ROW(r)                                                   \
        if (R > r) {                                                      \
            __m512 v = _mm512_set1_ps(x[r * m + i]);                      \
            c##r##0 = _mm512_fmadd_ps(l0, v, c##r##0);                    \
            if (P == 4) {                                                 \
                c##r##1 = _mm512_fmadd_ps(l1, v, c##r##1);                \
                c##r##2 = _mm512_fmadd_ps(l2, v, c##r##2);                \
                c##r##3 = _mm512_fmadd_ps(l3, v, c##r##3);                \
            }                                                             \
        }
        SPARSEKV_ROW(0)
        SPARSEKV_ROW(1)
        SPARSEKV_ROW(2)
        SPARSEKV_ROW(3)
#undef SPARSEKV_ROW
    }
#define SPARSEKV_STORE(r, p)                                                               \
    if (R > r && P > p) {                                                                  \
        long a0 = (p0 + p) * 16, left = n - a0;                                            \
        __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);      \
        _mm512_mask_storeu_ps(out + r * n + a0, k, c##r##p);                               \
    }
    SPARSEKV_STORE(0, 0) SPARSEKV_STORE(0, 1) SPARSEKV_STORE(0, 2) SPARSEKV_STORE(0, 3)
    SPARSEKV_STORE(1, 0) SPARSEKV_STORE(1, 1) SPARSEKV_STORE(1, 2) SPARSEKV_STORE(1, 3)
    SPARSEKV_STORE(2, 0) SPARSEKV_STORE(2, 1) SPARSEKV_STORE(2, 2) SPARSEKV_STORE(2, 3)
    SPARSEKV_STORE(3, 0) SPARSEKV_STORE(3, 1) SPARSEKV_STORE(3, 2) SPARSEKV_STORE(3, 3)
#undef SPARSEKV_STORE
}

// Rows R (1 ... 4, a constant once inlined) against every panel: four panels per pass
// (R * 4 accumulators and 4 lines, at most 20 of the 32 registers), then the rest one by one.
__attribute__((target("avx512f"), always_inline))
static inline void sparsekv_correlate_rows(const float *panels, long n, long m, const float *x, int R, float *out) {
    long count = (n + 15) / 16, p = 0;
    for (; p + 4 <= count; p += 4) sparsekv_correlate_block(panels, p, 4, n, m, x, R, out);
    for (; p < count; p++) sparsekv_correlate_block(panels, p, 1, n, m, x, R, out);
}

// out[r * n + a] = <atom a, rows[r]> for r < rowCount and a < n; panels as
// SparseDictionary.panels() lays them out, (ceil(n / 16), m, 16).
__attribute__((target("avx512f")))
static inline void sparsekv_correlate_avx512(const float *panels, long n, long m, const float *rows,
                                             long rowCount, float *out) {
    for (long r0 = 0; r0 < rowCount; r0 += 4) {
        const float *x = rows + r0 * m;
        float *o = out + r0 * n;
        // A constant row count per call, so each inlined copy keeps only its own rows' work.
        switch (rowCount - r0) {
        case 1: sparsekv_correlate_rows(panels, n, m, x, 1, o); break;
        case 2: sparsekv_correlate_rows(panels, n, m, x, 2, o); break;
        case 3: sparsekv_correlate_rows(panels, n, m, x, 3, o); break;
        default: sparsekv_correlate_rows(panels, n, m, x, 4, o); break;
        }
    }
}
#endif
