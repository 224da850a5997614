import Foundation

/// Why an entropy-coded stream or a frequency table was refused.
public enum EntropyCodingError: LocalizedError, Sendable, Equatable {
    /// A frequency table that cannot code: no symbols, a zero frequency, a wrong sum.
    case badTable(String)
    /// A symbol outside the table.
    case symbolOutOfRange(position: Int, symbol: Int, symbols: Int)
    /// A coded stream that does not decode to what its length and final state promise.
    case corruptStream(String)

    public var errorDescription: String? {
        switch self {
        case .badTable(let why):
            return "unusable entropy table: \(why). Recount the tables with `sparsekv dict tables`."
        case .symbolOutOfRange(let p, let s, let n):
            return "symbol \(s) at position \(p) is outside the table's \(n) symbols."
        case .corruptStream(let why):
            return "corrupt entropy-coded stream: \(why). The data was damaged or coded with other tables; send it again."
        }
    }
}
