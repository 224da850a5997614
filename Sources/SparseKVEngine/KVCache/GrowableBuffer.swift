/// A growable buffer of plain values with amortized O(1) appends and stable in-place
/// mutation (a Swift array nested in other arrays may be copied whole on append).
final class GrowableBuffer<Element: BitwiseCopyable> {
    private(set) var base: UnsafeMutablePointer<Element>
    private(set) var count = 0
    private(set) var capacity: Int

    init(capacity: Int = 0) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    /// Room for `extra` more elements; doubles the capacity when it grows.
    func reserve(_ extra: Int) {
        guard count + extra > capacity else { return }
        var c = capacity
        while c < count + extra { c *= 2 }
        let fresh = UnsafeMutablePointer<Element>.allocate(capacity: c)
        fresh.update(from: base, count: count)
        base.deallocate()
        base = fresh
        capacity = c
    }

    /// Appends `n` converted elements.
    @inline(__always)
    func append(_ src: UnsafePointer<Float>, count n: Int, _ convert: (Float) -> Element) {
        reserve(n)
        let dst = base + count
        for i in 0..<n { dst[i] = convert(src[i]) }
        count += n
    }

    func append(contentsOf other: [Element]) {
        reserve(other.count)
        other.withUnsafeBufferPointer { (base + count).update(from: $0.baseAddress!, count: $0.count) }
        count += other.count
    }

    func removeLast(_ n: Int) { count -= min(n, count) }

    var buffer: UnsafeBufferPointer<Element> { UnsafeBufferPointer(start: base, count: count) }

    var array: [Element] { Array(buffer) }
}
