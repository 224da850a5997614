// KIVI's packed codes widened to floats (KIVICodes.swift), for its fused attention.
#pragma once
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
