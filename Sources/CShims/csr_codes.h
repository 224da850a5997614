// The packed codes of a CSR stream (CSRCodeStream.swift): atom indices of `width` bits
// packed from bit 0 upwards, and fp16 row scales. Shared by the key and value kernels.
#pragma once
#include <stdint.h>
#include <string.h>
#include "correlate_avx512.h"

// Index k (width w bits, packed from bit 0 upwards) of a stream's index bytes: one 8-byte
// read while it lies inside the bytes, else byte by byte.
static inline long sparsekv_read_index(const uint8_t *bytes, long count, long w, long k) {
    long bit = k * w, byte = bit >> 3;
    if (byte + 8 <= count) {
        uint64_t word;
        memcpy(&word, bytes + byte, 8);
        return (long)((word >> (bit & 7)) & ((1ull << w) - 1));
    }
    uint64_t word = 0;
    for (long i = 0; byte + i < count && i < 8; i++) word |= (uint64_t)bytes[byte + i] << (8 * i);
    return (long)((word >> (bit & 7)) & ((1ull << w) - 1));
}

// IEEE binary16 bits to float, exactly (what vcvtph2ps gives).
static inline float sparsekv_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1F, f = h & 0x3FF, bits;
    if (e == 0) {
        if (f == 0) { bits = sign; }
        else {  // subnormal: f * 2^-24, exact in float
            float v = (float)f * 0x1p-24f;
            return (h >> 15) ? -v : v;
        }
    } else if (e == 31) {
        bits = sign | 0x7F800000u | (f << 13);
    } else {
        bits = sign | ((e + 112) << 23) | (f << 13);
    }
    float out;
    __builtin_memcpy(&out, &bits, 4);
    return out;
}

// Indices first ... first + n - 1 into out: four from one 8-byte read while the width is at
// most 14 bits and the read stays inside the bytes, then one at a time. Plain 4-byte stores,
// which a kernel's loads of them right after are forwarded from.
static inline void sparsekv_unpack_indices(const uint8_t *bytes, long count, long w, long first, long n, int32_t *out) {
    long k = 0, bit = first * w;
    uint64_t mask = (1ull << w) - 1;
    if (w <= 14) {
        for (; k + 4 <= n && (bit >> 3) + 8 <= count; k += 4, bit += 4 * w) {
            uint64_t word;
            memcpy(&word, bytes + (bit >> 3), 8);
            word >>= (bit & 7);
            out[k] = (int32_t)(word & mask);
            out[k + 1] = (int32_t)((word >> w) & mask);
            out[k + 2] = (int32_t)((word >> (2 * w)) & mask);
            out[k + 3] = (int32_t)((word >> (3 * w)) & mask);
        }
    }
    for (; k < n; k++) out[k] = (int32_t)sparsekv_read_index(bytes, count, w, first + k);
}

// Lane offsets in bits for unpacking the indices of one or two positions of pp contiguous
// indices each, `stride` indices apart, in one vector: lane i < pp gets index i of the first
// position, lanes pp ... 2pp - 1 those of the second. Returns 1 when the two fit one unpack
// (2pp <= 16 lanes, every offset inside its 64-byte read: see sparsekv_indices_at_avx512),
// else 0 (lanes from pp on are then not used).
static inline int sparsekv_position_offsets(long pp, long stride, long w, int32_t *offs) {
    for (long i = 0; i < 16; i++) offs[i] = (int32_t)((i / pp * stride + i % pp) * w);
    return 2 * pp <= 16 && (stride + pp) * w <= 480;
}

#if defined(__x86_64__)

// Whether this CPU runs the AVX-512 index unpacking below and the value run built on it:
// AVX-512F, BW, VL and VBMI (vpermb; CPUID leaf 7 EBX bits 30 and 31, ECX bit 1), and F16C
// (leaf 1 ECX bit 29: the value run converts its fp16 scales with it).
static inline int sparsekv_cpu_has_avx512vbmi(void) {
    if (!sparsekv_cpu_has_avx512f()) return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 29))) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b & (1u << 30)) && (b & (1u << 31)) && (c & (1u << 1));
}

#define SPARSEKV_VBMI_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vl"), always_inline))

// The indices at bits bit0 + off[i] of a stream, one per lane i in `lanes` (widths of at
// most 16 bits): the bytes from bit0's on, `span` bits of them, are read with a masked load
// (nothing past them), vpermb gives each lane the 4 bytes from the one holding its first
// bit, and a shift and a mask leave the index. Every lane's offset plus 31 must stay inside
// the 64 bytes read (off[i] <= 480). Lanes outside `lanes` are 0.
SPARSEKV_VBMI_TARGET
static inline __m512i sparsekv_indices_at_avx512(const uint8_t *bytes, long count, long w, long bit0, long span, __m512i off,
                                                 __mmask16 lanes) {
    long byte = bit0 >> 3, r0 = bit0 & 7;
    long need = (r0 + span + 7) >> 3;
    if (need > count - byte) need = count - byte;
    __m512i data = _mm512_maskz_loadu_epi8(need >= 64 ? ~0ull : (1ull << need) - 1, bytes + byte);
    __m512i bits = _mm512_add_epi32(_mm512_set1_epi32((int)r0), off);
    // Each lane's byte number copied into its four bytes, plus 0, 1, 2, 3: vpermb's selector.
    __m512i low = _mm512_setr_epi32(0, 0x04040404, 0x08080808, 0x0C0C0C0C, 0, 0x04040404, 0x08080808, 0x0C0C0C0C,
                                    0, 0x04040404, 0x08080808, 0x0C0C0C0C, 0, 0x04040404, 0x08080808, 0x0C0C0C0C);
    __m512i sel = _mm512_add_epi8(_mm512_shuffle_epi8(_mm512_srli_epi32(bits, 3), low), _mm512_set1_epi32(0x03020100));
    __m512i v = _mm512_srlv_epi32(_mm512_permutexvar_epi8(sel, data), _mm512_and_si512(bits, _mm512_set1_epi32(7)));
    return _mm512_maskz_and_epi32(lanes, v, _mm512_set1_epi32((1 << w) - 1));
}

// Indices first ... first + n - 1 (n <= 16, width w <= 16) in the lanes of one vector
// (sparsekv_indices_at_avx512 at offsets 0, w, 2w, ...). Lanes from n on are 0.
SPARSEKV_VBMI_TARGET
static inline __m512i sparsekv_indices16_avx512(const uint8_t *bytes, long count, long w, long first, long n) {
    __m512i off = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)w));
    return sparsekv_indices_at_avx512(bytes, count, w, first * w, n * w, off, (__mmask16)((1u << n) - 1));
}

#endif  // __x86_64__
