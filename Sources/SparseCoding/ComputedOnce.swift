import Foundation

/// A value derived from a dictionary's atoms (its Gram matrix, its atoms column by
/// column), computed on first use. A class so that every copy of a ``SparseDictionary``
/// shares one value; a lock so that two threads encoding with the same dictionary compute
/// it once.
final class ComputedOnce<Value>: @unchecked Sendable {
    private let lock = NSLock()
    /// nil until first requested.
    private var stored: Value?

    /// The kept value, computing it with `make` on first use.
    func value(_ make: () -> Value) -> Value {
        lock.lock()
        defer { lock.unlock() }
        if let v = stored { return v }
        let v = make()
        stored = v
        return v
    }
}
