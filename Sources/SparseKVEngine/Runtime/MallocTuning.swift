import CShims

/// glibc malloc settings for a serving process.
///
/// A prefill allocates buffers of megabytes (hidden states, the batch workspace, attention
/// scores). glibc serves such blocks from mmap at first, but raises its mmap threshold
/// each time one is freed, so from the second prompt on they come from a thread's arena;
/// freed, they stay resident there. A worker measured 57 MB of such an arena after one
/// 3,000-token prompt, against about 20 MB of live data. Fixing the threshold keeps every
/// block of `mmapThreshold` bytes or more in its own mapping, returned to the system when
/// freed, so the peak RSS follows the live set.
public enum MallocTuning {
    /// Blocks from this size up are mapped on their own (glibc's initial default is 128 KiB).
    public static let mmapThreshold: Int32 = 256 * 1024

    /// Sets the fixed threshold; call once at process start. A no-op off glibc.
    public static func apply() {
        #if canImport(Glibc)
        _ = mallopt(M_MMAP_THRESHOLD, mmapThreshold)
        #endif
    }
}
