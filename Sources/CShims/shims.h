// Small C pieces Swift does not expose. Header only: nothing to link.
#pragma once
#include <malloc.h>  // mallopt (MallocTuning.swift)

// The spin-wait hint (x86 `pause`; nothing elsewhere) for ComputePool's polling loops: the
// polling core frees its pipeline and, under a hypervisor, may let the host run another vCPU.
// Swift does not import the intrinsic headers' _mm_pause, which only exists inline.
static inline void sparsekv_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Asks for the 64-byte lines of [p, p + bytes) to be brought into the cache ahead of their
// reads (Prefetch.swift: the quantized products' weights, which stream from memory). A
// hint only: no fault, no effect on results.
static inline void sparsekv_prefetch(const void *p, long bytes) {
    const char *c = (const char *)p;
    for (long o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 3);
}
