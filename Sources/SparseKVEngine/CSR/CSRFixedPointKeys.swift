import CShims
import Foundation
import SparseCoding

/// Whether the CSR kernels below may use AVX-512 at all: `SPARSEKV_AVX512=0` keeps it off
/// for the key kernels, the index unpacking and the value kernels alike.
private let avx512Allowed = ProcessInfo.processInfo.environment["SPARSEKV_AVX512"] != "0"

/// A key stream's atoms as int16 fixed point, for keys with int8 coefficients.
///
/// Such a key row is w * Σ_k q_k A[a_k]: q_k its int8 coefficients, w its fp16 scale times
/// 2^-shift, and A the atoms as round(atom * 2^shift). The sum is an exact int32, which
/// `vpdpwssd` (AVX-512 VNNI) or `vpmaddwd` (AVX2) forms for two pairs per instruction, where
/// the fp16 atoms took a conversion and a multiply-add per 8 channels and pair. Every read
/// of the stream's keys (fused scoring, decoded blocks, the materialized reference) goes
/// through it, so all of them see the same keys (`csr_keys.h` gives the details).
///
/// The shift is 15 when every atom value rounds inside int16 at 2^15 (|x| < 0.99998), else
/// 14 (|x| < 2). The fixed-point value is within 2^-(shift+1) of the fp16 atom value; atoms
/// are unit vectors, whose typical value (1/8 at m = 64) fp16 holds to 2^-14.
struct FixedPointAtoms {
    /// (atoms, m) in the stored order of `csr_keys.h` (`sparsekv_fixed_position`), on a
    /// 64-byte boundary so that the kernels' 64-byte loads of an atom row stay inside lines.
    let atoms: AlignedBuffer<Int16>
    /// 2^-shift.
    let unit: Float

    /// The most pairs a row may have: s * 128 * 32767 stays inside int32.
    static let maxSparsity = 512

    /// nil when the atoms do not fit (a value of 2 or more, or not finite), or m is not 32 or 64.
    init?(bits: [UInt16], m: Int) {
        guard m == 32 || m == 64, bits.count % m == 0 else { return nil }
        var largest: Float = 0
        for b in bits {
            let x = abs(HalfPrecision.float(b))
            guard x.isFinite else { return nil }
            largest = max(largest, x)
        }
        let shift: Int
        if (largest * 32768).rounded() <= 32767 {
            shift = 15
        } else if (largest * 16384).rounded() <= 32767 {
            shift = 14
        } else {
            return nil
        }
        let factor = Float(1 << shift)
        var out = [Int16](repeating: 0, count: bits.count)
        for a in 0..<bits.count / m {
            for c in 0..<m {
                out[a * m + sparsekv_fixed_position(c)] = Int16((HalfPrecision.float(bits[a * m + c]) * factor).rounded())
            }
        }
        atoms = AlignedBuffer(out)
        unit = 1 / factor
    }

    /// The value at atom a, channel c.
    func value(atom a: Int, channel c: Int, m: Int) -> Int16 { atoms[a * m + sparsekv_fixed_position(c)] }
}

/// The kernels of `csr_keys.h`, chosen once from the CPU: AVX-512 VNNI, AVX2, or portable C,
/// all three giving the same bits. `SPARSEKV_AVX512=0` keeps AVX-512 off.
enum CSRKeyKernels {
    enum Level: Int, Sendable { case portable, avx2, avx512 }

    static let level: Level = {
        #if arch(x86_64)
        if sparsekv_cpu_has_avx512vnni() != 0 && avx512Allowed {
            return .avx512
        }
        if sparsekv_cpu_has_avx2() != 0 { return .avx2 }
        #endif
        return .portable
    }()

    /// Partial query products of a block of positions (`sparsekv_key_block`), at `level`.
    @inline(__always)
    static func partials(_ b: UnsafePointer<sparsekv_key_block>, level: Level = level) {
        #if arch(x86_64)
        switch level {
        case .avx512: sparsekv_key_partials_avx512(b)
        case .avx2: sparsekv_key_partials_avx2(b)
        case .portable: sparsekv_key_partials_portable(b)
        }
        #else
        sparsekv_key_partials_portable(b)
        #endif
    }

    /// `rows` rows decoded to floats, out[r * m + c] (`sparsekv_fixed_rows`).
    @inline(__always)
    static func rows(_ atoms: UnsafePointer<Int16>, m: Int, sparsity s: Int, indices: UnsafePointer<Int32>,
                     coefficients: UnsafePointer<Int8>, scales: UnsafePointer<UInt16>, unit: Float, count: Int,
                     into out: UnsafeMutablePointer<Float>, level: Level = level) {
        #if arch(x86_64)
        if level != .portable {
            return sparsekv_fixed_rows_avx2(atoms, m, s, indices, coefficients, scales, unit, count, out)
        }
        #endif
        sparsekv_fixed_rows(atoms, m, s, indices, coefficients, scales, unit, count, out)
    }
}

/// The index unpacking of `csr_codes.h`, shared by the key and value runs: with vpermb
/// (`sparsekv_indices16_avx512`) when the CPU has AVX-512 VBMI and `SPARSEKV_AVX512=0` is
/// not set, else 8-byte reads (`sparsekv_unpack_indices`); the same values either way.
enum CSRIndexUnpacking {
    static let vbmi: Bool = {
        #if arch(x86_64)
        return sparsekv_cpu_has_avx512vbmi() != 0 && avx512Allowed
        #else
        return false
        #endif
    }()

    /// Whether rows of `sparsity` pairs of `width`-bit indices are unpacked with vpermb.
    static func usesVBMI(sparsity: Int, width: Int) -> Bool { vbmi && sparsity <= 16 && width <= 16 }
}

/// The kernels of `csr_values.h` (CSR values in atom space), chosen once from the CPU.
/// `SPARSEKV_AVX512=0` keeps AVX-512 off, as for the key kernels.
enum CSRValueKernels {
    /// Whether the AVX-512 dictionary product of several rows runs.
    static let avx512: Bool = {
        #if arch(x86_64)
        return sparsekv_cpu_has_avx512f() != 0 && sparsekv_cpu_has_avx2() != 0 && avx512Allowed
        #else
        return false
        #endif
    }()

    /// The attention weights of positions t0 ..< t1 added into atom space
    /// (`sparsekv_value_accumulate`), with AVX-512 VBMI for indices of at most 16 bits and
    /// at most 4 chunks: a position at a time when its chunks hold at most 16 pairs in all,
    /// else row by row for rows of at most 16 pairs. All give the same bits.
    @inline(__always)
    static func accumulate(_ run: UnsafePointer<sparsekv_value_run>, _ t0: Int, _ t1: Int) {
        #if arch(x86_64)
        let r = run.pointee
        if CSRIndexUnpacking.usesVBMI(sparsity: r.s, width: r.width) && r.chunks <= 4 {
            if r.s * r.chunks <= 16 { return sparsekv_value_accumulate_positions_avx512(run, t0, t1) }
            return sparsekv_value_accumulate_avx512(run, t0, t1)
        }
        #endif
        sparsekv_value_accumulate(run, t0, t1)
    }
}
