/// Decides, without I/O, who serves a dead worker's layers. In order of preference:
/// 1. a standby (a worker without layers) whose budget holds them takes the dead
///    worker's place in the pipeline and loads exactly its layers;
/// 2. its pipeline neighbours extend their ranges as a drain would (the previous worker
///    takes the first half, rounded up, the next one the rest; a worker at either end
///    hands everything to its one neighbour), keeping the layers they hold;
/// 3. a fresh plan over every live worker (standbys included), by memory budget.
/// Every worker whose layers or next hop change gets an assignment; the sessions then
/// rebuild their KV on the new plan.
public enum FailoverPlanner {
    /// A worker as the planner sees it.
    public struct Member: Equatable, Sendable {
        public var id: String
        /// nil for a standby.
        public var layers: Range<Int>?
        /// Pieces of `layers` held as separate caches (see Worker).
        public var segments: [Range<Int>]
        public var budget: UInt64

        public init(id: String, layers: Range<Int>?, segments: [Range<Int>]? = nil, budget: UInt64) {
            self.id = id
            self.layers = layers
            self.segments = segments ?? layers.map { [$0] } ?? []
            self.budget = budget
        }
    }

    /// The new pipeline.
    public struct Plan: Equatable, Sendable {
        /// Layer-holding workers in pipeline order, with their new layers and segments.
        public var pipeline: [Member]
        /// Workers that must get an assignment (new layers or a new next hop), in pipeline order.
        public var assign: [String]
        /// How the dead worker's layers were placed, for the log.
        public var how: String
    }

    /// Why no plan exists.
    public enum Failure: Error, Equatable {
        /// No live worker is left to hold layers.
        case noWorkers
        /// The live workers' budgets cannot hold the model (the planner's message).
        case insufficientMemory(String)
    }

    /// - Parameters:
    ///   - pipeline: the layer-holding workers in pipeline order, the dead one included.
    ///   - standbys: live workers without layers, in registration order.
    ///   - dead: the id of the worker that died (in `pipeline`).
    ///   - bytesPerLayer, fixedBytes: as ``ShardPlanner/plan(layerCount:budgets:bytesPerLayer:fixedBytes:names:)``.
    public static func plan(pipeline: [Member], standbys: [Member], dead: String, layerCount: Int, bytesPerLayer: UInt64,
                            fixedBytes: UInt64) -> Result<Plan, Failure> {
        guard let x = pipeline.firstIndex(where: { $0.id == dead }), let lost = pipeline[x].layers else {
            return .success(Plan(pipeline: pipeline, assign: [], how: "\(dead) held no layers"))
        }
        func fits(_ layers: Range<Int>, _ m: Member) -> Bool { UInt64(layers.count) * bytesPerLayer + fixedBytes <= m.budget }
        let previous = x > 0 ? pipeline[x - 1].id : nil

        // 1. A standby takes the dead worker's place.
        if let s = standbys.first(where: { fits(lost, $0) }) {
            var line = pipeline
            line[x] = Member(id: s.id, layers: lost, budget: s.budget)
            return .success(Plan(pipeline: line, assign: [previous, s.id].compactMap { $0 },
                                 how: "standby \(s.id) takes layers \(lost.lowerBound)..<\(lost.upperBound)"))
        }

        // 2. The neighbours extend their ranges.
        var line = pipeline
        line.remove(at: x)
        guard !line.isEmpty else {
            return standbys.isEmpty ? .failure(.noWorkers) : fresh(standbys, layerCount: layerCount, bytesPerLayer: bytesPerLayer, fixedBytes: fixedBytes)
        }
        let p = x > 0 ? x - 1 : nil, n = x < line.count ? x : nil
        let cut = p == nil ? lost.lowerBound : n == nil ? lost.upperBound : lost.lowerBound + (lost.count + 1) / 2
        var fitsAll = true
        var assign: [String] = []
        for (i, part) in [(p, lost.lowerBound..<cut), (n, cut..<lost.upperBound)] {
            guard let i, !part.isEmpty, let held = line[i].layers else { continue }
            let grown = min(held.lowerBound, part.lowerBound)..<max(held.upperBound, part.upperBound)
            guard fits(grown, line[i]) else { fitsAll = false; break }
            line[i].layers = grown
            line[i].segments = (line[i].segments + [part]).sorted { $0.lowerBound < $1.lowerBound }
            assign.append(line[i].id)
        }
        // The previous worker gets a new next hop even when it takes no layers.
        if let p, !assign.contains(line[p].id) { assign.insert(line[p].id, at: 0) }
        if fitsAll {
            let order = line.map(\.id)
            assign.sort { order.firstIndex(of: $0)! < order.firstIndex(of: $1)! }
            return .success(Plan(pipeline: line, assign: assign,
                                 how: "neighbours take layers \(lost.lowerBound)..<\(lost.upperBound)"))
        }

        // 3. A fresh plan over everyone alive.
        let alive = pipeline.enumerated().filter { $0.offset != x }.map(\.element) + standbys
        return fresh(alive, layerCount: layerCount, bytesPerLayer: bytesPerLayer, fixedBytes: fixedBytes)
    }

    /// The pieces a worker holds once it serves `layers`, as the worker arranges them: a
    /// range that contains its old one keeps the old pieces and adds the new ends as
    /// pieces of their own; any other range is loaded afresh as one piece.
    static func segments(of m: Member, after layers: Range<Int>) -> [Range<Int>] {
        guard let old = m.layers, layers.lowerBound <= old.lowerBound, old.upperBound <= layers.upperBound else { return [layers] }
        let added = [layers.lowerBound..<old.lowerBound, old.upperBound..<layers.upperBound].filter { !$0.isEmpty }
        return (m.segments + added).sorted { $0.lowerBound < $1.lowerBound }
    }

    private static func fresh(_ members: [Member], layerCount: Int, bytesPerLayer: UInt64, fixedBytes: UInt64) -> Result<Plan, Failure> {
        // As many workers as have at least one layer's room, in their order.
        let usable = members.filter { bytesPerLayer + fixedBytes <= $0.budget }.prefix(layerCount)
        guard !usable.isEmpty else { return .failure(.noWorkers) }
        do {
            let ranges = try ShardPlanner.plan(layerCount: layerCount, budgets: usable.map(\.budget), bytesPerLayer: bytesPerLayer,
                                               fixedBytes: fixedBytes, names: usable.map(\.id))
            let line = zip(usable, ranges).map { Member(id: $0.id, layers: $1, segments: segments(of: $0, after: $1), budget: $0.budget) }
            return .success(Plan(pipeline: line, assign: line.map(\.id), how: "a new plan over \(line.map(\.id).joined(separator: ", "))"))
        } catch {
            return .failure(.insufficientMemory((error as? NodeError)?.description ?? "\(error)"))
        }
    }
}
