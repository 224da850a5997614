#!/usr/bin/env python3
"""Prints `export OPENBLAS_CORETYPE=...` when OpenBLAS would fall back to generic kernels.

Debian 12's OpenBLAS 0.3.21 does not recognise CPUs newer than itself (e.g. Intel family 6
model 207) and picks its `Prescott` kernels, about 4x slower. The `sparsekv` executable
notices and re-executes itself with the right OPENBLAS_CORETYPE; a test process cannot, so
`make test` evaluates this script's output first. A value already set is left alone, and
nothing is printed when OpenBLAS already picked a fitting kernel family. The rule is the
one of `BLASRuntime.preferredCoreType` in Sources/SparseKVEngine/Runtime/BLASRuntime.swift.
"""
import ctypes
import ctypes.util
import os

GENERIC = {"prescott", "katmai", "coppermine", "northwood", "banias", "core2", "penryn", "dunnington",
           "nehalem", "atom", "opteron", "opteron_sse3", "barcelona", "bobcat", "sandybridge", "unknown"}


def main():
    if os.environ.get("OPENBLAS_CORETYPE"):
        return
    name = ctypes.util.find_library("openblas") or "libopenblas.so.0"
    try:
        lib = ctypes.CDLL(name)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        core = lib.openblas_get_corename().decode().lower()
    except (OSError, AttributeError):
        return
    if core not in GENERIC:
        return
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags:
        print("export OPENBLAS_CORETYPE=SkylakeX")
    elif {"avx2", "fma"} <= flags:
        print("export OPENBLAS_CORETYPE=Haswell")


if __name__ == "__main__":
    main()
