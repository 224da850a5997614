/// Chooses a uniform random sample of fixed size from a stream of unknown length, one
/// item at a time (reservoir sampling, Vitter's Algorithm R).
///
/// The sampler only decides where each item goes; the caller keeps the items, so one
/// sampler can steer several parallel buffers (every layer's keys and values of the same
/// token) and keep them aligned. After `n` items every item is in the sample with
/// probability capacity / n, and the first `capacity` items are kept in arrival order.
public struct ReservoirSampler: Sendable {
    /// Where an item goes.
    public enum Placement: Equatable, Sendable {
        /// Append it: the sample is not full yet.
        case append
        /// Overwrite the sample's item at this slot.
        case replace(Int)
        /// Drop it.
        case skip
    }

    public let capacity: Int
    /// Items offered so far.
    public private(set) var seen = 0
    private var rng: Xoshiro256StarStar

    public init(capacity: Int, seed: UInt64) {
        precondition(capacity > 0, "a reservoir holds at least one item")
        self.capacity = capacity
        rng = Xoshiro256StarStar(seed: seed)
    }

    /// Items in the sample now.
    public var count: Int { min(seen, capacity) }

    /// Offers the next item of the stream.
    public mutating func offer() -> Placement {
        defer { seen += 1 }
        if seen < capacity { return .append }
        // Item number seen (0-based) replaces a uniform slot of 0...seen when it falls below capacity.
        let j = Int(UInt64.random(in: 0...UInt64(seen), using: &rng))
        return j < capacity ? .replace(j) : .skip
    }
}
