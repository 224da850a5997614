import Foundation
import Logging
import SparseKVEngine

/// Runs completions in this process on one model.
///
/// Concurrency: the model's forward pass is not safe to run twice at once (it is given
/// one cache at a time and uses every core for one matrix product), so one compute
/// thread runs every session. It interleaves them round-robin, one unit of work each: a
/// prefill chunk of `prefillBatch` tokens or one decode token. Each session has its own
/// KV cache and sampler, so concurrent requests get exactly the text they would get
/// alone. At most `maxActive` sessions run at once; up to `maxQueued` more wait; beyond
/// that a request is refused with 503 (never queued without bound).
public final class LocalBackend: InferenceBackend, @unchecked Sendable {
    // @unchecked: the mutable state (queue, active, counters) is behind `condition`;
    // sessions' caches are used by the compute thread only.
    public let modelName: String
    public let tokenizer: BPETokenizer
    public let contextLength: Int
    public var acceptsTokenPrompts: Bool { true }
    public let cacheType: KVCacheType
    public let maxActive: Int
    public let maxQueued: Int
    private let generator: TextGenerator
    private let dictionaryHash: String
    private let logger: Logger
    private let condition = NSCondition()
    private var queue: [LocalSession] = []
    private var active: [LocalSession] = []
    private var kvBytes: [ObjectIdentifier: UInt64] = [:]
    private var stopping = false
    private var stopped = false
    private var thread: Thread?

    public init(model: LlamaModel, tokenizer: BPETokenizer, cacheType: KVCacheType, modelName: String, contextLength: Int?,
                maxActive: Int = 4, maxQueued: Int = 16, dictionaryHash: String = "", logger: Logger) {
        generator = TextGenerator(model: model, cacheType: cacheType, contextLength: contextLength)
        self.contextLength = generator.contextLength
        self.tokenizer = tokenizer
        self.cacheType = cacheType
        self.modelName = modelName
        self.maxActive = max(1, maxActive)
        self.maxQueued = max(0, maxQueued)
        self.dictionaryHash = dictionaryHash
        self.logger = logger
    }

    /// Starts the compute thread.
    public func startComputing() {
        condition.withLock {
            guard thread == nil else { return }
            let t = Thread { [self] in computeLoop() }
            t.name = "sparsekv-compute"
            t.stackSize = 16 << 20
            thread = t
            t.start()
        }
    }

    /// Refuses new requests, lets the running and queued ones finish, then returns once
    /// the compute thread has ended.
    public func finishAndStop() async {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
        while !condition.withLock({ stopped || thread == nil }) {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    public func notReadyReason() -> String? {
        condition.withLock {
            if stopping { return "shutting down" }
            return thread == nil ? "the compute thread has not started" : nil
        }
    }

    public func start(_ job: GenerationJob) throws(APIError) -> GenerationHandle {
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, any Error>.makeStream()
        let session = LocalSession(job: job, continuation: continuation)
        let refusal: APIError? = condition.withLock {
            if stopping || thread == nil { return .notReady(stopping ? "shutting down" : "starting") }
            if active.count + queue.count >= maxActive + maxQueued { return .overloaded(queued: queue.count) }
            queue.append(session)
            condition.signal()
            return nil
        }
        if let refusal { throw refusal }
        continuation.onTermination = { _ in session.cancel() }
        return GenerationHandle(events: stream, cancel: { session.cancel() })
    }

    public func gauges() -> BackendGauges {
        var g = BackendGauges()
        condition.withLock {
            g.activeSessions = active.count
            g.queuedRequests = queue.count
            g.kvCacheBytes = kvBytes.values.reduce(0, +)
        }
        g.kvCache = cacheType.description
        g.dictionaryHash = dictionaryHash
        return g
    }

    // MARK: - Compute thread

    private func computeLoop() {
        while true {
            let batch: [LocalSession]? = condition.withLock {
                while queue.isEmpty && active.isEmpty && !stopping { condition.wait() }
                if queue.isEmpty && active.isEmpty && stopping {
                    stopped = true
                    return nil
                }
                while active.count < maxActive, !queue.isEmpty { active.append(queue.removeFirst()) }
                return active
            }
            guard let batch else { return }
            for s in batch {
                advance(s)
                let bytes = UInt64(s.cache?.byteCount ?? 0)
                condition.withLock {
                    if s.done {
                        active.removeAll { $0 === s }
                        kvBytes[ObjectIdentifier(s)] = nil
                    } else {
                        kvBytes[ObjectIdentifier(s)] = bytes
                    }
                }
            }
        }
    }

    /// One unit of work for `s`: a prefill chunk or one sampled token.
    private func advance(_ s: LocalSession) {
        if s.isCancelled { return finish(s, reason: "cancelled") }
        do {
            let prompt = s.job.promptTokens
            let cache: any KVCache
            if let c = s.cache {
                cache = c
            } else {
                guard !prompt.isEmpty else { throw APIError.invalid("the prompt is empty after tokenization", param: "prompt") }
                guard prompt.count < contextLength else { throw APIError.contextLengthExceeded(promptTokens: prompt.count, contextLength: contextLength) }
                cache = generator.model.makeCache(cacheType, capacity: contextLength)
                s.cache = cache
                s.started = .now
            }
            if s.prefilled < prompt.count {
                // The same chunks as TextGenerator.prefill, so greedy tokens equal `generate`'s.
                let end = min(s.prefilled + generator.prefillBatch, prompt.count)
                s.logits = try generator.prefill(Array(prompt[s.prefilled..<end]), cache: cache)
                s.prefilled = end
                if end == prompt.count { s.prefillEnd = .now }
                return
            }
            // As TextGenerator.generate: sample, stop on end of generation, budget, context.
            let next = s.sampler.sample(s.logits)
            if !s.job.ignoreEOS && tokenizer.isEndOfGeneration(next) { return finish(s, reason: "eos") }
            s.generated += 1
            s.continuation.yield(.token(next))
            if s.generated >= s.job.maxTokens { return finish(s, reason: "length") }
            if cache.tokenCount >= contextLength { return finish(s, reason: "context") }
            s.logits = try generator.step(next, cache: cache)
        } catch let e as APIError {
            s.done = true
            s.cache = nil
            s.continuation.finish(throwing: e)
        } catch {
            logger.error("generation failed: \(error.localizedDescription)")
            s.done = true
            s.cache = nil
            s.continuation.finish(throwing: APIError.generationFailed(error.localizedDescription))
        }
    }

    private func finish(_ s: LocalSession, reason: String) {
        let now = ContinuousClock.now
        let started = s.started ?? now, prefillEnd = s.prefillEnd ?? now
        let summary = GenerationSummary(
            stopReason: reason, promptTokens: s.job.promptTokens.count, completionTokens: s.generated,
            prefillSeconds: seconds(prefillEnd - started), decodeSeconds: seconds(now - prefillEnd),
            kvCache: s.cache?.kind ?? cacheType.description, kvCacheBytes: UInt64(s.cache?.byteCount ?? 0))
        s.done = true
        s.cache = nil
        s.continuation.yield(.finished(summary))
        s.continuation.finish()
    }

    private func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
