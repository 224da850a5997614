import Foundation

/// Holds a dictionary's Gram matrix once computed. A class so that every copy of a
/// ``SparseDictionary`` shares one matrix; a lock so that two threads encoding with the
/// same dictionary compute it once.
final class GramCache: @unchecked Sendable {
    private let lock = NSLock()
    /// (N, N) row-major, nil until first requested.
    private var matrix: [Float]?

    /// The cached matrix, computing it with `make` on first use.
    func value(_ make: () -> [Float]) -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        if let m = matrix { return m }
        let m = make()
        matrix = m
        return m
    }
}
