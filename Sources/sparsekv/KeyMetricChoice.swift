import ArgumentParser

/// `--key-metric`: what key coding error the dictionary minimises.
enum KeyMetricChoice: String, ExpressibleByArgument, CaseIterable {
    case query, l2
}
