/// Which windows of a calibration corpus the dictionary tools run the model over.
///
/// Every file gets an equal share of the windows (water-filling: a file too short for its
/// share gives all it has, the rest is shared among the others), and each file's windows
/// are spread evenly over it. A corpus of several texts of different sizes is then
/// represented text by text, not in proportion to length, and no window straddles two
/// files. One file gives what it always gave: min(available, wanted) evenly spaced windows.
public enum CalibrationPlan {
    /// Windows per file for files holding `available` whole windows each, `wanted` in all
    /// (fewer when the files hold fewer).
    public static func windowCounts(available: [Int], wanted: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: available.count)
        var left = min(max(wanted, 0), available.reduce(0) { $0 + max($1, 0) })
        while left > 0 {
            let open = available.indices.filter { counts[$0] < available[$0] }
            // Equal share of what is left; the first files take the remainder one each.
            let share = left / open.count, extra = left % open.count
            for (k, i) in open.enumerated() {
                let give = min(available[i] - counts[i], share + (k < extra ? 1 : 0))
                counts[i] += give
                left -= give
            }
        }
        return counts
    }

    /// The windows of `window` tokens to run: `files` are the corpus files' tokens, at most
    /// maxTokens / window windows in all, in file order.
    public static func windows(files: [[Int32]], window: Int, maxTokens: Int) -> [[Int32]] {
        guard window > 0 else { return [] }
        return windows(files: files, window: window,
                       counts: windowCounts(available: files.map { $0.count / window }, wanted: maxTokens / window))
    }

    /// The windows of `window` tokens to run, `counts[f]` of them from file f (at most what
    /// it holds: ``windowCounts(available:wanted:)``), in file order.
    public static func windows(files: [[Int32]], window: Int, counts: [Int]) -> [[Int32]] {
        guard window > 0 else { return [] }
        let available = files.map { $0.count / window }
        var picked: [[Int32]] = []
        for (f, tokens) in files.enumerated() where counts[f] > 0 {
            for i in 0..<counts[f] {
                let w = i * available[f] / counts[f]
                picked.append(Array(tokens[w * window..<(w + 1) * window]))
            }
        }
        return picked
    }
}
