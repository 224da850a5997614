/// A ``TrafficCount`` per ``TrafficCategory``.
public struct TrafficByCategory: Sendable, Equatable, Codable {
    public var control = TrafficCount()
    public var activations = TrafficCount()
    public var kv = TrafficCount()
    public var dictionary = TrafficCount()

    public init() {}

    public subscript(_ c: TrafficCategory) -> TrafficCount {
        get {
            switch c {
            case .control: control
            case .activations: activations
            case .kv: kv
            case .dictionary: dictionary
            }
        }
        set {
            switch c {
            case .control: control = newValue
            case .activations: activations = newValue
            case .kv: kv = newValue
            case .dictionary: dictionary = newValue
            }
        }
    }

    /// All categories together.
    public var total: TrafficCount { TrafficCategory.allCases.reduce(TrafficCount()) { $0 + self[$1] } }

    public static func + (a: TrafficByCategory, b: TrafficByCategory) -> TrafficByCategory {
        var s = a
        for c in TrafficCategory.allCases { s[c] += b[c] }
        return s
    }
}
