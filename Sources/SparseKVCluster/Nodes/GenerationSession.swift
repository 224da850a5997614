import Foundation
import SparseKVEngine

/// One generate request as a state machine, free of I/O: it says which hidden states to
/// send into the pipeline next and consumes the states that come back. Prefill goes in
/// chunks of `prefillBatch` tokens and logits come from the same calls as in
/// ``SparseKVEngine/TextGenerator``, so greedy tokens match a single-process run exactly.
public struct GenerationSession {
    /// What the coordinator must do after a transition.
    public enum Action: Equatable {
        /// Send these states to the first worker.
        case send(ActivationsBody)
        /// The request is complete.
        case finish(stopReason: String)
    }

    public let id: UInt64
    public let prompt: [Int32]
    public let maxTokens: Int
    public let contextLength: Int
    public var prefillBatch = 512
    public private(set) var generated: [Int32] = []
    /// Positions the workers' caches hold once the states in flight are through.
    public private(set) var position = 0
    /// Tokens in flight (sent, not yet back).
    private var inFlight = 0
    /// After a restart: the next of `generated` to feed again instead of sampling.
    private var replayed: Int?
    /// Times the session was rebuilt on a new plan (``restart(model:)``).
    public private(set) var restarts = 0
    private var sampler: Sampler
    private let isStop: (Int32) -> Bool
    public private(set) var prefillEnd: ContinuousClock.Instant?
    public let started = ContinuousClock.now

    public init(id: UInt64, prompt: [Int32], maxTokens: Int, sampling: SamplingOptions, contextLength: Int,
                isStop: @escaping (Int32) -> Bool) {
        self.id = id
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.contextLength = contextLength
        self.isStop = isStop
        sampler = Sampler(sampling)
    }

    /// The first prefill chunk.
    public mutating func start(model: LlamaModel) throws -> Action {
        guard !prompt.isEmpty else { throw NodeError.badConfiguration("the prompt is empty after tokenization") }
        guard prompt.count <= contextLength else {
            throw ModelError.contextFull(needed: prompt.count, contextLength: contextLength)
        }
        return try sendPrompt(model: model)
    }

    /// Rebuilds the session's KV from nothing, on whatever pipeline serves now (after a
    /// failover): the prompt goes in the same chunks as the first time, then every token
    /// generated so far is fed again one step at a time, without sampling. The workers
    /// thus run exactly the calls of the first run, so the caches (CSR online atoms and
    /// guard entries included) and every later token are the same bit for bit.
    public mutating func restart(model: LlamaModel) throws -> Action {
        position = 0
        inFlight = 0
        replayed = 0
        restarts += 1
        return try sendPrompt(model: model)
    }

    /// Goes on from position `q` after a failover that kept the KV (replicas): every
    /// worker's caches hold at least `q` tokens (those holding more cut back to `q` on the
    /// next states, see Worker), so the generated tokens from `q` on are fed again without
    /// sampling, usually just the one that was in flight, and the prompt is not recomputed.
    /// A `q` inside the prompt, or past what the caches can hold, falls back to
    /// ``restart(model:)``.
    public mutating func resume(at q: Int, model: LlamaModel) throws -> Action {
        let fed = prompt.count + generated.count - 1  // the last position any worker may hold
        guard prefillEnd != nil, !generated.isEmpty, q >= prompt.count, q <= fed else {
            return try restart(model: model)
        }
        position = q
        inFlight = 0
        replayed = q - prompt.count + 1
        restarts += 1
        return .send(try states([generated[q - prompt.count]], phase: .decode, model: model))
    }

    /// Whether the session is feeding generated tokens again after a restart.
    public var isReplaying: Bool { replayed != nil }

    private mutating func sendPrompt(model: LlamaModel) throws -> Action {
        let chunk = Array(prompt[position..<min(position + prefillBatch, prompt.count)])
        return .send(try states(chunk, phase: .prefill, model: model))
    }

    private mutating func states(_ tokens: [Int32], phase: ActivationsBody.Phase, model: LlamaModel) throws -> ActivationsBody {
        let h = try model.embed(tokens)  // (tokens.count, dim)
        let body = ActivationsBody(phase: phase, nextLayer: 0, startPosition: position, tokenCount: tokens.count,
                                   hiddenDim: model.config.embeddingLength, hidden: h)
        inFlight = tokens.count
        return body
    }

    /// States that came back from the last worker.
    public mutating func receive(_ a: ActivationsBody, model: LlamaModel) throws -> Action {
        guard inFlight > 0, a.startPosition == position, a.tokenCount == inFlight,
              a.nextLayer == model.config.layerCount, a.hiddenDim == model.config.embeddingLength
        else {
            throw NodeError.badConfiguration("session \(id): unexpected states back (start \(a.startPosition), \(a.tokenCount) tokens, layer \(a.nextLayer)); expected start \(position), \(inFlight) tokens")
        }
        position += a.tokenCount
        inFlight = 0
        if a.phase == .prefill, position < prompt.count { return try sendPrompt(model: model) }
        if let r = replayed {
            if r < generated.count {
                replayed = r + 1
                return .send(try states([generated[r]], phase: .decode, model: model))
            }
            // Every generated token is back in the caches: sample from these states.
            replayed = nil
        }
        let logits: [Float]
        if a.phase == .prefill {
            logits = try model.logits(a.hidden, count: a.tokenCount, rows: a.tokenCount - 1..<a.tokenCount)
            prefillEnd = ContinuousClock.now
        } else {
            logits = try model.logits(a.hidden, count: 1)
        }
        if maxTokens == 0 { return .finish(stopReason: "length") }
        let next = sampler.sample(logits)
        if isStop(next) { return .finish(stopReason: "eos") }
        generated.append(next)
        if generated.count == maxTokens { return .finish(stopReason: "length") }
        if position >= contextLength { return .finish(stopReason: "context") }
        return .send(try states([next], phase: .decode, model: model))
    }
}
