import CBLAS
import Foundation
import Synchronization

/// OpenBLAS at run time: which kernels it picked, how many threads it uses, and the
/// fix for CPUs that Debian's OpenBLAS 0.3.21 does not recognise.
///
/// OpenBLAS chooses its kernels when the library loads, from `OPENBLAS_CORETYPE` or
/// its own CPU detection. On CPUs newer than the library (e.g. Intel family 6 model
/// 207) detection falls back to generic `Prescott` kernels, about 4x slower. The only
/// remedy is the environment variable, read at load time, so `ensureFastKernels`
/// re-executes the program once with it set.
public enum BLASRuntime {
    /// Kernel family OpenBLAS is using, e.g. "Haswell", "Zen", "SkylakeX", "Prescott".
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    public static var config: String {
        guard let p = openblas_get_config() else { return "unknown" }
        return String(cString: p)
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// Sets OpenBLAS's threads (left alone when already `n`). Not while another thread is
    /// inside OpenBLAS: its pool is not made to change under a running call.
    public static func setThreads(_ n: Int) {
        let n = max(1, n)
        if n != threads { openblas_set_num_threads(Int32(n)) }
    }

    /// Whether batched work (prefill's weight products and attention units) is split over
    /// the engine's own threads, each calling OpenBLAS single-threaded: so when OpenBLAS
    /// runs on one thread (the CLI's setting). Otherwise the work runs in turn and
    /// OpenBLAS's pool threads each sgemm.
    static var engineSplitsBatches: Bool {
        switch splitOverride.load(ordering: .relaxed) {
        case 1: true
        case 2: false
        default: threads == 1
        }
    }

    /// 0: ``engineSplitsBatches`` follows OpenBLAS's threads; 1: always split; 2: never.
    /// For tests, which take both paths without changing OpenBLAS's threads while other
    /// tests of the same process are inside it (OpenBLAS does not allow that).
    static let splitOverride = Atomic<Int>(0)

    /// Kernel families that leave AVX2/AVX-512 unused.
    static let genericCores: Set<String> = [
        "prescott", "katmai", "coppermine", "northwood", "banias", "core2", "penryn", "dunnington",
        "nehalem", "atom", "opteron", "opteron_sse3", "barcelona", "bobcat", "sandybridge", "unknown",
    ]

    /// The core type to force, or nil when the current choice is already right.
    /// - Parameters:
    ///   - current: `openblas_get_corename()`
    ///   - cpuFlags: the CPU's feature flags as /proc/cpuinfo spells them
    public static func preferredCoreType(current: String, cpuFlags: Set<String>) -> String? {
        guard genericCores.contains(current.lowercased()) else { return nil }
        if cpuFlags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"]) { return "SkylakeX" }
        if cpuFlags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        if cpuFlags.contains("avx") && current.lowercased() != "sandybridge" { return "Sandybridge" }
        return nil
    }

    /// Feature flags of the first CPU in /proc/cpuinfo (empty where that file does not exist).
    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return [] }
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        }
        return []
    }

    static let reexecMarker = "SPARSEKV_BLAS_REEXEC"

    /// Call first thing in `main`. When OpenBLAS picked generic kernels on a CPU with
    /// AVX2 or AVX-512 and the user did not set OPENBLAS_CORETYPE, re-executes this
    /// program with the right OPENBLAS_CORETYPE; returns normally otherwise.
    public static func ensureFastKernels() {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env[reexecMarker] == nil,
              let core = preferredCoreType(current: coreName, cpuFlags: cpuFlags())
        else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv(reexecMarker, "1", 1)
        let args = CommandLine.arguments
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cargs.append(nil)
        execv("/proc/self/exe", &cargs)
        // exec failed: carry on with the slow kernels rather than not at all.
        unsetenv(reexecMarker)
    }
}
