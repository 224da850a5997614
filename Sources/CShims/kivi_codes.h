// KIVI's packed codes widened to floats (KIVICodes.swift), for its fused attention, and
// its codes made from floats (KIVICache.quantizeOldestGroups).
#pragma once
#include <math.h>
#include <stdint.h>
#include "csr_keys.h"  // sparsekv_cpu_has_avx2

// The 2n 4-bit codes of n bytes, low nibble first, as floats: the portable version.
static inline void sparsekv_kivi_unpack4(const uint8_t *bytes, long n, float *out) {
    for (long i = 0; i < n; i++) {
        out[2 * i] = (float)(bytes[i] & 15);
        out[2 * i + 1] = (float)(bytes[i] >> 4);
    }
}

#if defined(__x86_64__)
// The same, 8 bytes (16 codes) at a time: the nibbles split with a shift and a mask,
// interleaved back into order, widened and converted. A table of each byte's two floats
// (as before) costs a load and a store per byte.
__attribute__((target("avx2")))
static inline void sparsekv_kivi_unpack4_avx2(const uint8_t *bytes, long n, float *out) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(bytes + i));
        __m128i lo = _mm_and_si128(b, mask), hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
        __m128i c = _mm_unpacklo_epi8(lo, hi);
        _mm256_storeu_ps(out + 2 * i, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)));
        _mm256_storeu_ps(out + 2 * i + 8, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c, 8))));
    }
    sparsekv_kivi_unpack4(bytes + i, n - i, out + 2 * i);
}
#endif

// KIVI's codes of n values, each with its own scale and minimum (fp16 values, widened):
// (x - zero) / scale rounded half away from zero, clamped to 0 ... levels (NaN to 0); 0
// where the scale is not positive: KIVI's definition (as KIVICacheTests writes it in
// Swift), value for value.
static inline void sparsekv_kivi_codes(const float *x, const float *scale, const float *zero, long n, float levels,
                                       uint8_t *out) {
    for (long i = 0; i < n; i++) {
        float s = scale[i];
        if (!(s > 0)) { out[i] = 0; continue; }
        float q = roundf((x[i] - zero[i]) / s);
        if (!(q >= 0)) q = 0;
        if (q > levels) q = levels;
        out[i] = (uint8_t)q;
    }
}

#if defined(__x86_64__)
// The same, 8 values at a time. Rounding half away from zero is truncation after adding
// 0.5 - 2^-25 with the value's sign: a value just below a half stays below it, a half
// itself reaches the next integer (1 - 2^-25 rounds to 1), and from 2^22 on the sum rounds
// to the right neighbour; codes past `levels` are clamped anyway.
__attribute__((target("avx2")))
static inline void sparsekv_kivi_codes_avx2(const float *x, const float *scale, const float *zero, long n, float levels,
                                            uint8_t *out) {
    const __m256 half = _mm256_set1_ps(0.49999997f), sign = _mm256_set1_ps(-0.0f), zeroes = _mm256_setzero_ps();
    const __m256 top = _mm256_set1_ps(levels);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 s = _mm256_loadu_ps(scale + i);
        __m256 y = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(zero + i)), s);
        __m256 q = _mm256_round_ps(_mm256_add_ps(y, _mm256_or_ps(half, _mm256_and_ps(y, sign))),
                                   _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        q = _mm256_and_ps(q, _mm256_cmp_ps(q, zeroes, _CMP_GE_OQ));    // below 0 or NaN: 0
        q = _mm256_blendv_ps(q, top, _mm256_cmp_ps(q, top, _CMP_GT_OQ));
        q = _mm256_and_ps(q, _mm256_cmp_ps(s, zeroes, _CMP_GT_OQ));    // scale not positive: 0
        __m256i c = _mm256_cvttps_epi32(q);
        __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
        _mm_storel_epi64((__m128i *)(out + i), _mm_packus_epi16(w, w));
    }
    sparsekv_kivi_codes(x + i, scale + i, zero + i, n - i, levels, out + i);
}
#endif
