import Foundation
import SparseKVEngine

// Kept replicas on the worker side. A worker asked (kvRequest, mode replica) sends a
// session's KV for one of its segments to the replica holder in the cache's own format
// and from then on, before passing each decoded token's states on, that token's append
// payload. The holder keeps the replica and applies each payload to it, so it holds what
// the original holds (CSR codes, guard entries and online atoms byte for byte). When the
// original's worker dies, the coordinator asks the holder to install the replica (or a
// piece of it) on whoever takes the layers, itself included; the session then goes on
// from the replica's last token. States with a newer request id than any before may
// start earlier than a session's caches reach: the caches are cut back to where they
// start, which is how a resumed session drops a token some workers had run and others not.

extension Worker {
    /// A new request id's states starting before the caches' end: cut them back.
    func cutBack(session: UInt64, to position: Int, requestID: UInt64) {
        guard let held = sessions[session], requestID > latestRequest[session] ?? 0 else { return }
        for (first, cache) in held where cache.tokenCount > position {
            logger.info("session \(session) layers from \(first): cut back from \(cache.tokenCount) to \(position) tokens (resumed)")
            cache.truncate(to: position)
        }
    }

    /// Sends each decoded token's KV to where the session's segments stream. A failed send
    /// stops that stream (the replica goes stale, and a failover then recomputes); it
    /// never fails the step.
    func streamDecoded(_ a: ActivationsBody, message m: WireMessage, caches: [any KVCache]) throws {
        guard let targets = streams[m.sessionID] else { return }
        let tokens = a.startPosition..<(a.startPosition + a.tokenCount)
        for (segment, cache) in zip(segments, caches) {
            guard let destination = targets[segment.layers.lowerBound] else { continue }
            let payload = try cache.appendPayload(layers: segment.layers, tokens: tokens)
            let hash = try dictionaryHash(for: cache.kind)
            do {
                try peer(destination).send(WireMessage(.kvTransfer(KVTransferBody(layers: segment.layers, encoding: cache.kind, dictionaryHash: hash,
                                                                                  mode: .stream, payload: payload)),
                                                       requestID: m.requestID, sessionID: m.sessionID), timeout: .seconds(5))
            } catch {
                logger.warning("session \(m.sessionID): stopped streaming layers \(segment.layers.lowerBound)..<\(segment.layers.upperBound) to \(destination): \(error.localizedDescription)")
                streams[m.sessionID]?[segment.layers.lowerBound] = nil
            }
        }
    }

    /// kvRequest mode replica: the session's cache for the segment `r.layers` goes to the
    /// holder, and every later decoded token's KV follows it.
    func startReplica(_ r: KVRequestBody, message m: WireMessage) throws {
        guard let cache = sessions[m.sessionID]?[r.layers.lowerBound], cache.geometry.layers == r.layers else {
            let held = sessions[m.sessionID].map { $0.values.map { "\($0.geometry.layers)" }.sorted().joined(separator: ", ") } ?? "nothing"
            throw WorkerFailure(code: .unknownSession, message: "no cache of session \(m.sessionID) for exactly layers \(r.layers.lowerBound)..<\(r.layers.upperBound) (held: \(held))")
        }
        guard try cache.format.supportsReplica else {
            throw WorkerFailure(code: .unexpectedMessage, message: "a '\(cache.kind)' cache cannot be kept as a replica")
        }
        let payload = try cache.serialize(layers: r.layers)
        let hash = try dictionaryHash(for: cache.kind)
        let destination = r.destination.description
        do {
            try peer(destination).send(WireMessage(.kvTransfer(KVTransferBody(layers: r.layers, encoding: cache.kind, dictionaryHash: hash,
                                                                              mode: .replica, payload: payload)),
                                                   requestID: m.requestID, sessionID: m.sessionID), timeout: .seconds(30))
        } catch {
            throw WorkerFailure(code: .unreachable, message: "cannot reach the replica holder \(r.destination): \(error.localizedDescription)")
        }
        streams[m.sessionID, default: [:]][r.layers.lowerBound] = destination
        logger.info("session \(m.sessionID) layers \(r.layers.lowerBound)..<\(r.layers.upperBound): replica of \(cache.tokenCount) tokens (\(payload.count) bytes) sent to \(r.destination); streaming each decoded token there")
    }

    /// A stream payload for layers this worker keeps a replica of: applied to it (after
    /// cutting it back if the stream restarts earlier, as after a resume). Returns false
    /// when no replica of those layers is kept here (measured streaming). Never throws for
    /// a payload that does not fit: the replica is dropped, so a failover recomputes.
    func applyToReplica(_ t: KVTransferBody, message m: WireMessage, from received: ReceivedMessage) throws -> Bool {
        guard let replica = replicas[m.sessionID]?[t.layers.lowerBound], replica.geometry.layers == t.layers else { return false }
        func drop(_ why: String) {
            logger.warning("session \(m.sessionID): dropped the replica of layers \(t.layers.lowerBound)..<\(t.layers.upperBound) from \(received.peer): \(why)")
            replicas[m.sessionID]?[t.layers.lowerBound] = nil
        }
        do {
            let first = try Self.firstPosition(t.payload)
            if first < replica.tokenCount { replica.truncate(to: first) }
            guard first == replica.tokenCount else {
                drop("the stream jumps to token \(first); the replica holds \(replica.tokenCount)")
                return true
            }
            try replica.applyAppendPayload(t.payload)
            logger.trace("session \(m.sessionID) replica of layers \(t.layers.lowerBound)..<\(t.layers.upperBound): \(replica.tokenCount) tokens")
        } catch {
            drop(error.localizedDescription)
        }
        return true
    }

    /// The first position an append payload carries (after its header).
    static func firstPosition(_ payload: [UInt8]) throws -> Int {
        try payload.withUnsafeBytes { raw in
            var r = BinaryReader(raw)
            _ = try KVPayloadHeader.read(from: &r)
            do { return Int(try r.read(UInt32.self, "first position")) } catch let e as BinaryReader.OutOfBounds {
                throw KVCacheError.malformedPayload("truncated in \(e.what)")
            }
        }
    }

    /// kvRequest mode install addressed to this worker itself: a replica kept here becomes
    /// the session's cache for `r.layers` (a failover gave this worker those layers).
    func installFromReplica(_ r: KVRequestBody, message m: WireMessage) throws {
        guard let assignment else { throw WorkerFailure(code: .unexpectedMessage, message: "a KV install before any assignment") }
        guard let (first, replica) = replicas[m.sessionID]?.first(where: {
            $0.value.geometry.layers.lowerBound <= r.layers.lowerBound && r.layers.upperBound <= $0.value.geometry.layers.upperBound
        }) else {
            throw WorkerFailure(code: .unknownSession, message: "no replica of session \(m.sessionID) layers \(r.layers.lowerBound)..<\(r.layers.upperBound) is kept here")
        }
        let cache: any KVCache
        if replica.geometry.layers == r.layers {
            cache = replica
        } else {
            cache = try decodePayload(KVTransferBody(layers: r.layers, encoding: replica.kind, dictionaryHash: try dictionaryHash(for: replica.kind),
                                                     payload: try replica.serialize(layers: r.layers)),
                                      capacity: assignment.contextCapacity)
        }
        guard try install(cache, layers: r.layers, session: m.sessionID) else {
            throw WorkerFailure(code: .layerMismatch, message: "layers \(r.layers.lowerBound)..<\(r.layers.upperBound) are not served here")
        }
        if replica.geometry.layers == r.layers { replicas[m.sessionID]?[first] = nil }
        logger.info("installed the replica of session \(m.sessionID) layers \(r.layers.lowerBound)..<\(r.layers.upperBound): \(cache.tokenCount) tokens")
        try up.send(WireMessage(.kvTransferAck(KVTransferAckBody(layers: r.layers, tokenCount: cache.tokenCount, mode: .install)),
                                requestID: m.requestID, sessionID: m.sessionID), timeout: .seconds(5))
    }

    /// Makes `cache` the session's cache for `layers` when they are (or can be made) one
    /// of this worker's segments and it is of this worker's kind; else keeps it as a
    /// replica. Returns whether it was installed as the session's cache.
    @discardableResult
    func install(_ cache: any KVCache, layers: Range<Int>, session: UInt64) throws -> Bool {
        let ownKind = cacheType?.kind
        if cache.kind == ownKind, try segmentForInstall(layers, session: session) {
            sessions[session, default: [:]][layers.lowerBound] = cache
            return true
        }
        replicas[session, default: [:]][layers.lowerBound] = cache
        return false
    }

    /// A received cache, decoded completely by its kind's format (payloads coded over a
    /// dictionary must name this worker's).
    func decodePayload(_ t: KVTransferBody, capacity: Int) throws -> any KVCache {
        let format = try knownFormat(t.encoding)
        return try format.deserialize(t.payload, capacity: capacity, rope: base.rope, codec: try codec(for: format, hash: t.dictionaryHash))
    }

    /// The registry's format of a received encoding, or a wire error naming it.
    func knownFormat(_ encoding: String) throws -> KVCacheFormat {
        do { return try KVCacheFormats.format(kind: encoding) } catch {
            throw WorkerFailure(code: .unexpectedMessage, message: "unknown KV encoding '\(encoding)': \(error.localizedDescription)")
        }
    }

    /// The codec a payload of `format` stamped with dictionary `hash` decodes with: nil for
    /// a dictionary-free format; else this worker's, which must be for that dictionary.
    func codec(for format: KVCacheFormat, hash: String) throws -> CSRCodec? {
        guard format.needsDictionary else { return nil }
        guard let dictionary, hash == dictionary.contentHash else {
            throw WorkerFailure(code: .dictionaryMismatch, message: "the payload is coded with dictionary \(hash); this worker holds \(dictionary?.contentHash ?? "none")")
        }
        guard let codec = cacheType?.codec else {
            throw WorkerFailure(code: .unexpectedMessage, message: "a '\(format.kind)' payload, but this worker's cache is \(assignment?.kvSpec ?? "not set")")
        }
        return codec
    }

    /// The dictionary hash a payload of `kind` is stamped with ("" for a dictionary-free kind).
    func dictionaryHash(for kind: String) throws -> String {
        try KVCacheFormats.format(kind: kind).needsDictionary ? (dictionary?.contentHash ?? "") : ""
    }
}
