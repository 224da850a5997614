import SparseKVEngine

// The SparseKV cluster wire protocol, version 2: every constant, message kind, field order
// and limit lives in this file (zguide style), so that a reader can check the whole format
// in one place. Payload structs (Messages/) hold the values; this file says how they are
// laid out and which values are allowed. The mechanics live beside it: bounded field
// reads (WireFieldReader.swift), rule helpers (WireFieldRules.swift), sinks (WireSink.swift).
//
// One wire message = one ZeroMQ frame. A ROUTER socket adds one routing-id frame in front
// of it locally; that frame never crosses the wire as data and is not part of the message.
//
// All integers are little-endian; floats are IEEE-754 binary32, little-endian.
// A string is u32 byte count + UTF-8 bytes; a blob is u32 byte count + bytes.
//
// Header (28 bytes, common to every kind). magic and version stay at offsets 0 and 4 in
// every future version, so that a peer of another version is told so rather than
// misparsed.
//
//   off size field
//     0    4 magic        0x5756_4B53, the bytes "SKVW"
//     4    2 version      2 (1: before token streaming, per-worker KV bytes and kept replicas)
//     6    1 kind         MessageKind raw value
//     7    1 flags        activations: exactly one of prefill 0x01 / decode 0x02; others 0
//     8    8 request id   chosen by the requester, echoed by the reply (any value)
//    16    8 session id   != 0 for session kinds (see below), 0 for the others
//    24    4 body length  bytes after the header; must equal what is left of the frame
//    28      body         fields of the kind, in the order below; no bytes may follow
//
// Bodies (direction; session id rule; fields in order):
//
//   0x01 register         W->C  none   worker id str(1...64, [A-Za-z0-9._-]),
//                                      peer endpoint str (connectable endpoint),
//                                      memory budget bytes u64 (>0),
//                                      model fingerprint str(hex, 1...128)
//   0x02 registerAck      C->W  none   worker index u32 (< maxWorkers)
//   0x03 shardAssignment  C->W  none   first layer u32, end layer u32 (first < end <= model layers),
//                                      model layers u32 (1...maxLayers),
//                                      kv cache spec str(1...64, printable ASCII, e.g. "csr:8"),
//                                      dictionary hash str(hex, 0...128; required iff spec is csr),
//                                      context capacity u32 (1...maxContext),
//                                      next hop u8 (0 coordinator, 1 peer),
//                                        [peer: next-hop endpoint str (connectable endpoint)]
//   0x04 shardReady       W->C  none   first layer u32, end layer u32, weight bytes u64
//   0x05 dictionary       C->W  none   content hash str(hex, 1...128),
//                                      GGUF file blob(4...maxDictionaryBytes, starts "GGUF")
//   0x06 dictionaryAck    W->C  none   content hash str(hex, 1...128)
//   0x10 activations      any   req.   next layer u32 (0...maxLayers; = model layers when the
//                                        states return to the coordinator),
//                                      start position u32, token count u32 (1...maxTokensPerActivation),
//                                      hidden dim u32 (1...maxHiddenDim),
//                                      kv bytes u64 (the session's KV bytes on the workers passed),
//                                      (start position + token count <= maxContext),
//                                      hidden states f32 x (token count * hidden dim), all finite,
//                                      worker count u32 (0...maxWorkers), then per worker passed, in
//                                        order: worker id str(1...64, [A-Za-z0-9._-]), its KV bytes u64
//                                        (each worker appends itself; their sum is kv bytes)
//   0x20 kvTransfer       W->W  req.   first layer u32, end layer u32,
//                                      encoding str(1...32, [A-Za-z0-9._:-]) = payload's cache kind,
//                                      dictionary hash str(hex, 0...128; required iff encoding "csr"),
//                                      mode u8 (0 install, 1 measure: check and discard,
//                                        2 stream: new tokens' KV, an append payload; no ack),
//                                      payload blob(1...maxMessageBytes) = KVCache.serialize(layers:)
//                                        output; its KVPayloadHeader must name the same kind
//                                        and layer range
//   0x21 kvTransferAck    W->*  req.   first layer u32, end layer u32, token count u32 (<= maxContext),
//                                      mode u8 (0/1), payload bytes u64,
//                                      wire bytes u64 (the kvTransfer message as received)
//   0x22 kvRequest        C->W  req.   first layer u32, end layer u32,
//                                      destination endpoint str (connectable endpoint),
//                                      encoding str(1...32, [A-Za-z0-9._:-]; the cache's kind or "fp16"),
//                                      mode u8 (0/1)
//   0x23 dropSession      C->W  req.   (empty)
//   0x30 statsRequest     any   none   (empty)
//   0x31 statsReply       any   none   kv cache bytes u64, session count u32 (<= maxSessions),
//                                      rejected: sent bytes, sent messages, received bytes,
//                                        received messages (4 x u64),
//                                      peer count u32 (<= maxStatsPeers), then per peer, labels
//                                        strictly ascending: label str(1...maxPeerLabelLength),
//                                        per category in TrafficCategory order: the same 4 x u64,
//                                      serving u8 (0/1), context u32 (0...maxContext),
//                                      kv cache spec str(0...64, printable ASCII),
//                                      dictionary hash str(hex, 0...128),
//                                      worker count u32 (0...maxWorkers), then per worker: worker id
//                                        str(1...64, [A-Za-z0-9._-]), ready u8 (0/1), alive u8 (0/1),
//                                        kv bytes u64 (the coordinator's; a worker sends 0, 0, "", "", 0)
//   0x40 shutdown         any   none   reason str(0...1024)
//   0x41 error            any   any    code u16 (WireErrorCode), message str(0...4096)
//   0x42 ping             any   none   nonce u64
//   0x43 pong             any   none   nonce u64 (the ping's)
//   0x50 generateRequest  client->C none prompt str(0...maxPromptBytes), chat u8 (0/1),
//                                      max tokens u32 (0...maxContext), temperature f32 (finite, >= 0),
//                                      top k u32 (0...maxTopK), top p f32 (finite, (0, 1]), seed u64,
//                                      ignore eos u8 (0/1),
//                                      stream u8 (0/1: send a generateToken per sampled token)
//   0x51 generateReply    C->client none prompt token count u32 (1...maxContext) + i32 each,
//                                      generated token count u32 (0...maxContext) + i32 each,
//                                      text str(0...maxReplyTextBytes), prefill ns u64, decode ns u64,
//                                      stop reason str(1...32, [A-Za-z0-9._-]), kv cache str(1...32, same),
//                                      kv cache bytes u64, activation bytes sent u64, received u64,
//                                      kv transfer bytes u64, kv transfer ns u64,
//                                      kv baseline bytes u64, kv baseline ns u64,
//                                      worker count u32 (0...maxWorkers), then per worker, in pipeline
//                                        order: worker id str(1...64, [A-Za-z0-9._-]), its KV bytes u64
//   0x52 drainRequest     client->C none worker id str(1...64, [A-Za-z0-9._-]),
//                                      baseline encoding str(0...32; empty = none), min generated u32
//   0x53 drainReply       C->client none worker id str, first layer u32, end layer u32, drain ns u64,
//                                      session count u32 (<= maxSessions),
//                                      transfer count u32 (<= maxDrainTransfers), then per transfer:
//                                        session id u64 (!= 0), first layer u32, end layer u32,
//                                        destination worker id str, encoding str, mode u8,
//                                        token count u32 (<= maxContext), payload bytes u64,
//                                        wire bytes u64, ns u64
//   0x54 generateToken    C->client none token id i32 (>= 0): one sampled token of a request
//                                      sent with stream 1 (same request id), in order, before its reply
//   0x55 generateCancel   client->C none (empty): end the request with this id (stop reason
//                                      "cancelled"; its reply still comes); unknown ids are ignored
//
// Heartbeat: besides its main link, every worker opens a second DEALER to the coordinator
// with routing id "<worker id>.hb", served by a thread of its own so that a worker busy
// computing still answers. The coordinator sends ping(nonce) to it every heartbeat
// interval and counts the worker alive while anything (a pong, or any message from the
// worker) arrived within `heartbeatLiveness` intervals; after that the worker is declared
// dead and its layers fail over. A worker that gets no ping for as long exits. Worker ids
// ending in ".hb" are refused so the two names never collide.
//
// Categories for byte accounting: activations -> activations, kvTransfer -> kv,
// dictionary -> dictionary, every other kind -> control.

#if !_endian(little)
#error("The wire format stores floats by copying memory; add byte swapping for big-endian hosts.")
#endif

// MARK: - Constants and limits

/// The SparseKV cluster wire protocol: constants, limits, and the codec of every message
/// kind. The layout table at the top of WireProtocol.swift is the specification.
public enum WireProtocol {
    /// First four bytes of every message: "SKVW".
    public static let magic: UInt32 = 0x5756_4B53
    /// Protocol version; a peer speaking another version is refused with
    /// ``WireError/unsupportedVersion(received:supported:)``.
    public static let version: UInt16 = 2
    /// Bytes of the common header.
    public static let headerSize = 28

    /// Header flag of an activations message: the tokens are (part of) a prompt.
    public static let prefillFlag: UInt8 = 0x01
    /// Header flag of an activations message: the tokens were generated one step at a time.
    public static let decodeFlag: UInt8 = 0x02

    // Limits. Everything a peer sends is checked against these before memory is allocated.

    /// Largest whole message (header + body), also set as ZMQ_MAXMSGSIZE on sockets.
    public static let maxMessageBytes = 1 << 30
    /// Most tokens in one activations message (a prefill chunk; SmolLM2's whole context).
    public static let maxTokensPerActivation = 8192
    /// Widest hidden state (d_model) accepted.
    public static let maxHiddenDim = 16384
    /// Most positions a session may hold (the engine's own payload limit).
    public static let maxContext = KVPayloadHeader.maxTokens
    /// Most layers of a model (the engine's own payload limit).
    public static let maxLayers = KVPayloadHeader.maxLayers
    /// Largest dictionary GGUF file.
    public static let maxDictionaryBytes = maxMessageBytes - 4096
    /// Most workers a coordinator numbers.
    public static let maxWorkers = 1024
    /// Most sessions a stats reply reports.
    public static let maxSessions = 1 << 20
    /// Most peers a stats reply lists.
    public static let maxStatsPeers = 4096
    /// Most transfers a drain reply lists.
    public static let maxDrainTransfers = 1 << 16

    /// Longest worker id (also used as its ZeroMQ routing id, which libzmq caps at 255).
    public static let maxWorkerIDLength = 64
    /// Longest endpoint string, e.g. "tcp://10.0.0.7:5557".
    public static let maxEndpointLength = 256
    /// Longest hex hash or fingerprint (SHA-256 is 64).
    public static let maxHashLength = 128
    /// Longest KV cache spec, e.g. "csr:4,coef=i8": CSR's are the longest.
    public static let maxSpecLength = CSRSettings.maxDescriptionLength
    /// Longest KV encoding name, e.g. "csr", "fp16".
    public static let maxEncodingLength = 32
    /// Longest peer label in a stats reply.
    public static let maxPeerLabelLength = 1024
    /// Longest shutdown reason.
    public static let maxReasonLength = 1024
    /// Longest error message.
    public static let maxErrorMessageLength = 4096

    /// Longest prompt text of a generate request.
    public static let maxPromptBytes = 1 << 20
    /// Longest generated text of a generate reply.
    public static let maxReplyTextBytes = 1 << 22
    /// Largest top-k cut of a generate request.
    public static let maxTopK = 1 << 20

    /// The encoding name of CSR-coded KV transfers, which must name their dictionary.
    public static let csrEncoding = "csr"

    // Heartbeat (see the note above the constants).

    /// Time between two pings of the coordinator to each worker (`--heartbeat-ms`).
    public static let heartbeatInterval: Duration = .milliseconds(100)
    /// Intervals without any sign of life before a peer counts as dead (`--liveness`):
    /// with the defaults, a killed or stopped worker is declared dead after 1.5 to 1.6 s;
    /// a shorter silence is tolerated, as a loaded machine can hold a process that long.
    public static let heartbeatLiveness = 15
    /// Suffix of a worker's heartbeat routing id: "<worker id>.hb".
    public static let heartbeatSuffix = ".hb"

    /// The routing id of a worker's heartbeat socket.
    public static func heartbeatRoutingID(worker id: String) -> [UInt8] { Array((id + heartbeatSuffix).utf8) }
}

// MARK: - Message kinds and categories

/// What a message is; the raw value is the header's kind byte. Never renumber.
public enum MessageKind: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case register = 0x01
    case registerAck = 0x02
    case shardAssignment = 0x03
    case shardReady = 0x04
    case dictionary = 0x05
    case dictionaryAck = 0x06
    case activations = 0x10
    case kvTransfer = 0x20
    case kvTransferAck = 0x21
    case kvRequest = 0x22
    case dropSession = 0x23
    case statsRequest = 0x30
    case statsReply = 0x31
    case shutdown = 0x40
    case error = 0x41
    case ping = 0x42
    case pong = 0x43
    case generateRequest = 0x50
    case generateReply = 0x51
    case drainRequest = 0x52
    case drainReply = 0x53
    case generateToken = 0x54
    case generateCancel = 0x55

    /// Which byte counter the message's bytes go to.
    public var category: TrafficCategory {
        switch self {
        case .activations: return .activations
        case .kvTransfer: return .kv
        case .dictionary: return .dictionary
        default: return .control
        }
    }

    /// Whether the header's session id must be set (non-zero), must be zero, or may be either.
    public var sessionRule: SessionRule {
        switch self {
        case .activations, .kvTransfer, .kvTransferAck, .kvRequest, .dropSession: return .required
        case .error: return .optional
        default: return .none
        }
    }

    /// Whether a kind carries a session id.
    public enum SessionRule: Sendable { case required, none, optional }

    public var description: String { "\(self.name)(0x\(String(rawValue, radix: 16)))" }

    var name: String {
        switch self {
        case .register: "register"
        case .registerAck: "registerAck"
        case .shardAssignment: "shardAssignment"
        case .shardReady: "shardReady"
        case .dictionary: "dictionary"
        case .dictionaryAck: "dictionaryAck"
        case .activations: "activations"
        case .kvTransfer: "kvTransfer"
        case .kvTransferAck: "kvTransferAck"
        case .kvRequest: "kvRequest"
        case .dropSession: "dropSession"
        case .statsRequest: "statsRequest"
        case .statsReply: "statsReply"
        case .shutdown: "shutdown"
        case .error: "error"
        case .ping: "ping"
        case .pong: "pong"
        case .generateRequest: "generateRequest"
        case .generateReply: "generateReply"
        case .drainRequest: "drainRequest"
        case .drainReply: "drainReply"
        case .generateToken: "generateToken"
        case .generateCancel: "generateCancel"
        }
    }
}

/// Byte-accounting category of a message. Declaration order is the order of the
/// per-category counters in a stats reply; never reorder.
public enum TrafficCategory: String, CaseIterable, Codable, Sendable {
    /// Registration, assignments, acks, requests, stats, errors, pings.
    case control
    /// Hidden states moving along the pipeline.
    case activations
    /// KV cache transfers between workers (CSR or dense).
    case kv
    /// Dictionary broadcast.
    case dictionary
}

/// Error codes carried by an error message. Never renumber.
public enum WireErrorCode: UInt16, CaseIterable, Sendable {
    /// The request could not be decoded (see the message text).
    case malformedMessage = 1
    /// The peer speaks another protocol version.
    case unsupportedVersion = 2
    /// The message is valid but not expected in the receiver's current state.
    case unexpectedMessage = 3
    /// The session id is not known to the receiver.
    case unknownSession = 4
    /// The model fingerprint differs from the coordinator's.
    case modelMismatch = 5
    /// A payload or assignment names a dictionary the receiver does not hold.
    case dictionaryMismatch = 6
    /// The layers named are not the receiver's.
    case layerMismatch = 7
    /// The session would exceed the context capacity.
    case capacityExceeded = 8
    /// The receiver's memory budget does not allow it.
    case outOfMemory = 9
    /// The next hop or destination could not be reached.
    case unreachable = 10
    /// The receiver is shutting down.
    case shuttingDown = 11
    /// Anything else; the message says what.
    case internalError = 12
}

// MARK: - Header

/// The fixed 28-byte header in front of every message body.
public struct WireHeader: Sendable, Equatable {
    public var kind: MessageKind
    public var flags: UInt8
    public var requestID: UInt64
    public var sessionID: UInt64
    /// Bytes of body after the header.
    public var bodyLength: Int

    public init(kind: MessageKind, flags: UInt8, requestID: UInt64, sessionID: UInt64, bodyLength: Int) {
        self.kind = kind
        self.flags = flags
        self.requestID = requestID
        self.sessionID = sessionID
        self.bodyLength = bodyLength
    }
}

// MARK: - Encoding

extension WireProtocol {
    /// Encodes a message, after checking it against every rule a receiver checks.
    /// - Throws: ``WireError`` naming the field that a receiver would refuse.
    public static func encode(_ message: WireMessage) throws -> [UInt8] {
        try validate(message)
        var counter = SizeCounter()
        writeBody(message.body, to: &counter)
        let total = headerSize + counter.count
        guard total <= maxMessageBytes else { throw WireError.messageTooLarge(bytes: total, limit: maxMessageBytes) }
        var w = BinaryWriter(capacity: total)
        w.write(magic)
        w.write(version)
        w.write(message.kind.rawValue)
        w.write(flags(of: message.body))
        w.write(message.requestID)
        w.write(message.sessionID)
        w.write(UInt32(counter.count))
        writeBody(message.body, to: &w)
        return w.bytes
    }

    static func flags(of body: WireBody) -> UInt8 {
        if case .activations(let a) = body { return a.phase == .prefill ? prefillFlag : decodeFlag }
        return 0
    }

    /// Field order of every body (see the table at the top of this file). Written twice per
    /// message: once into a counter for the header's body length, once into the bytes.
    static func writeBody<S: WireSink>(_ body: WireBody, to w: inout S) {
        switch body {
        case .register(let b):
            w.write(b.workerID)
            w.write(b.peerEndpoint.description)
            w.write(b.memoryBudgetBytes)
            w.write(b.modelFingerprint)
        case .registerAck(let workerIndex):
            w.write(UInt32(workerIndex))
        case .shardAssignment(let b):
            w.writeLayers(b.layers)
            w.write(UInt32(b.modelLayers))
            w.write(b.kvSpec)
            w.write(b.dictionaryHash)
            w.write(UInt32(b.contextCapacity))
            switch b.nextHop {
            case .coordinator:
                w.write(UInt8(0))
            case .peer(let e):
                w.write(UInt8(1))
                w.write(e.description)
            }
        case .shardReady(let b):
            w.writeLayers(b.layers)
            w.write(b.weightBytes)
        case .dictionary(let b):
            w.write(b.contentHash)
            w.writeBlob(b.gguf)
        case .dictionaryAck(let hash):
            w.write(hash)
        case .activations(let b):
            w.write(UInt32(b.nextLayer))
            w.write(UInt32(b.startPosition))
            w.write(UInt32(b.tokenCount))
            w.write(UInt32(b.hiddenDim))
            w.write(b.kvBytes)
            w.writeFloats(b.hidden)
            w.writeWorkerKV(b.kvBytesByWorker)
        case .kvTransfer(let b):
            w.writeLayers(b.layers)
            w.write(b.encoding)
            w.write(b.dictionaryHash)
            w.write(b.mode.rawValue)
            w.writeBlob(b.payload)
        case .kvTransferAck(let b):
            w.writeLayers(b.layers)
            w.write(UInt32(b.tokenCount))
            w.write(b.mode.rawValue)
            w.write(b.payloadBytes)
            w.write(b.wireBytes)
        case .kvRequest(let b):
            w.writeLayers(b.layers)
            w.write(b.destination.description)
            w.write(b.encoding)
            w.write(b.mode.rawValue)
        case .dropSession, .statsRequest, .generateCancel:
            break
        case .statsReply(let b):
            w.write(b.kvCacheBytes)
            w.write(UInt32(b.sessionCount))
            w.writeTraffic(b.traffic.rejected)
            w.write(UInt32(b.traffic.byPeer.count))
            for (label, traffic) in b.traffic.byPeer.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
                w.write(label)
                for c in TrafficCategory.allCases { w.writeTraffic(traffic[c]) }
            }
            let c = b.cluster
            w.write(UInt8(c.serving ? 1 : 0))
            w.write(UInt32(c.contextLength))
            w.write(c.kvSpec)
            w.write(c.dictionaryHash)
            w.write(UInt32(c.workers.count))
            for s in c.workers {
                w.write(s.worker)
                w.write(UInt8(s.ready ? 1 : 0))
                w.write(UInt8(s.alive ? 1 : 0))
                w.write(s.kvBytes)
            }
        case .shutdown(let reason):
            w.write(reason)
        case .error(let b):
            w.write(b.code.rawValue)
            w.write(b.message)
        case .ping(let nonce), .pong(let nonce):
            w.write(nonce)
        case .generateRequest(let b):
            w.write(b.prompt)
            w.write(UInt8(b.chat ? 1 : 0))
            w.write(UInt32(b.maxTokens))
            w.write(b.temperature.bitPattern)
            w.write(UInt32(b.topK))
            w.write(b.topP.bitPattern)
            w.write(b.seed)
            w.write(UInt8(b.ignoreEOS ? 1 : 0))
            w.write(UInt8(b.stream ? 1 : 0))
        case .generateReply(let b):
            for tokens in [b.promptTokens, b.generatedTokens] {
                w.write(UInt32(tokens.count))
                for t in tokens { w.write(UInt32(bitPattern: t)) }
            }
            w.write(b.text)
            w.write(b.prefillNanoseconds)
            w.write(b.decodeNanoseconds)
            w.write(b.stopReason)
            w.write(b.kvCache)
            w.write(b.kvCacheBytes)
            w.write(b.activationBytesSent)
            w.write(b.activationBytesReceived)
            w.write(b.kvTransferBytes)
            w.write(b.kvTransferNanoseconds)
            w.write(b.kvBaselineBytes)
            w.write(b.kvBaselineNanoseconds)
            w.writeWorkerKV(b.kvBytesByWorker)
        case .drainRequest(let b):
            w.write(b.workerID)
            w.write(b.baseline)
            w.write(UInt32(b.minGenerated))
        case .drainReply(let b):
            w.write(b.workerID)
            w.writeLayers(b.layers)
            w.write(b.nanoseconds)
            w.write(UInt32(b.sessionCount))
            w.write(UInt32(b.transfers.count))
            for t in b.transfers {
                w.write(t.sessionID)
                w.writeLayers(t.layers)
                w.write(t.destination)
                w.write(t.encoding)
                w.write(t.mode.rawValue)
                w.write(UInt32(t.tokenCount))
                w.write(t.payloadBytes)
                w.write(t.wireBytes)
                w.write(t.nanoseconds)
            }
        case .generateToken(let token):
            w.write(UInt32(bitPattern: token))
        }
    }
}

extension WireSink {
    /// A per-worker KV list: count u32, then worker id str and bytes u64 each.
    mutating func writeWorkerKV(_ list: [WorkerKVBytes]) {
        write(UInt32(list.count))
        for e in list {
            write(e.worker)
            write(e.bytes)
        }
    }
}

// MARK: - Decoding

extension WireProtocol {
    /// Reads and checks the header alone: magic, version, kind, flags for the kind, and the
    /// body length against the limit and against the bytes present.
    public static func decodeHeader(_ raw: UnsafeRawBufferPointer) throws -> WireHeader {
        guard raw.count <= maxMessageBytes else { throw WireError.messageTooLarge(bytes: raw.count, limit: maxMessageBytes) }
        var r = BinaryReader(raw)
        func field<T: FixedWidthInteger>(_: T.Type, _ name: String) throws -> T {
            do { return try r.read(T.self, name) } catch { throw WireError.truncated(kind: nil, field: name) }
        }
        let m = try field(UInt32.self, "magic")
        guard m == magic else { throw WireError.badMagic(m) }
        let v = try field(UInt16.self, "version")
        guard v == version else { throw WireError.unsupportedVersion(received: v, supported: version) }
        let k = try field(UInt8.self, "kind")
        guard let kind = MessageKind(rawValue: k) else { throw WireError.unknownKind(k) }
        let flags = try field(UInt8.self, "flags")
        let requestID = try field(UInt64.self, "request id")
        let sessionID = try field(UInt64.self, "session id")
        let bodyLength = Int(try field(UInt32.self, "body length"))
        guard headerSize + bodyLength <= maxMessageBytes else {
            throw WireError.messageTooLarge(bytes: headerSize + bodyLength, limit: maxMessageBytes)
        }
        guard bodyLength == r.remaining else {
            throw WireError.bodyLengthMismatch(kind: kind, declared: bodyLength, actual: r.remaining)
        }
        let flagsValid = kind == .activations ? (flags == prefillFlag || flags == decodeFlag) : flags == 0
        guard flagsValid else { throw WireError.invalidFlags(kind: kind, flags: flags) }
        return WireHeader(kind: kind, flags: flags, requestID: requestID, sessionID: sessionID, bodyLength: bodyLength)
    }

    /// Decodes one message, checking every field.
    /// - Throws: ``WireError``; never traps, whatever the bytes.
    public static func decode(_ raw: UnsafeRawBufferPointer) throws -> WireMessage {
        let h = try decodeHeader(raw)
        var r = FieldReader(kind: h.kind, bytes: UnsafeRawBufferPointer(rebasing: raw[headerSize...]))
        let body = try readBody(h, &r)
        guard r.remaining == 0 else { throw WireError.trailingBytes(kind: h.kind, count: r.remaining) }
        let message = WireMessage(body, requestID: h.requestID, sessionID: h.sessionID)
        try validate(message)
        return message
    }

    private static func readBody(_ h: WireHeader, _ r: inout FieldReader) throws -> WireBody {
        switch h.kind {
        case .register:
            let id = try r.string("worker id", max: maxWorkerIDLength)
            let endpoint = try r.endpoint("peer endpoint")
            let budget = try r.u64("memory budget")
            let fingerprint = try r.string("model fingerprint", max: maxHashLength)
            return .register(RegisterBody(workerID: id, peerEndpoint: endpoint, memoryBudgetBytes: budget,
                                          modelFingerprint: fingerprint))
        case .registerAck:
            return .registerAck(workerIndex: try r.int("worker index"))
        case .shardAssignment:
            let layers = try r.layers()
            let modelLayers = try r.int("model layers")
            let spec = try r.string("kv cache spec", max: maxSpecLength)
            let hash = try r.string("dictionary hash", max: maxHashLength)
            let capacity = try r.int("context capacity")
            let hop: ShardAssignmentBody.NextHop
            switch try r.u8("next hop") {
            case 0: hop = .coordinator
            case 1: hop = .peer(try r.endpoint("next hop endpoint"))
            case let t: throw WireError.invalidField(kind: h.kind, field: "next hop", reason: "tag \(t), expected 0 (coordinator) or 1 (peer)")
            }
            return .shardAssignment(ShardAssignmentBody(
                layers: layers, modelLayers: modelLayers, kvSpec: spec, dictionaryHash: hash,
                contextCapacity: capacity, nextHop: hop))
        case .shardReady:
            let layers = try r.layers()
            return .shardReady(ShardReadyBody(layers: layers, weightBytes: try r.u64("weight bytes")))
        case .dictionary:
            let hash = try r.string("content hash", max: maxHashLength)
            return .dictionary(DictionaryBody(contentHash: hash, gguf: try r.blob("gguf", max: maxDictionaryBytes)))
        case .dictionaryAck:
            return .dictionaryAck(contentHash: try r.string("content hash", max: maxHashLength))
        case .activations:
            let nextLayer = try r.int("next layer")
            let start = try r.int("start position")
            let tokens = try r.count("token count", max: maxTokensPerActivation)
            let dim = try r.count("hidden dim", max: maxHiddenDim)
            let kvBytes = try r.u64("kv bytes")
            let hidden = try r.floats("hidden states", count: tokens * dim)
            let byWorker = try r.workerKV()
            return .activations(ActivationsBody(
                phase: h.flags == prefillFlag ? .prefill : .decode, nextLayer: nextLayer, startPosition: start,
                tokenCount: tokens, hiddenDim: dim, kvBytes: kvBytes, hidden: hidden, kvBytesByWorker: byWorker))
        case .kvTransfer:
            let layers = try r.layers()
            let encoding = try r.string("encoding", max: maxEncodingLength)
            let hash = try r.string("dictionary hash", max: maxHashLength)
            let mode = try r.transferMode()
            let payload = try r.blob("payload", max: maxMessageBytes)
            return .kvTransfer(KVTransferBody(layers: layers, encoding: encoding, dictionaryHash: hash, mode: mode, payload: payload))
        case .kvTransferAck:
            let layers = try r.layers()
            let tokens = try r.int("token count")
            let mode = try r.transferMode()
            return .kvTransferAck(KVTransferAckBody(layers: layers, tokenCount: tokens, mode: mode,
                                                    payloadBytes: try r.u64("payload bytes"), wireBytes: try r.u64("wire bytes")))
        case .kvRequest:
            let layers = try r.layers()
            let destination = try r.endpoint("destination")
            let encoding = try r.string("encoding", max: maxEncodingLength)
            return .kvRequest(KVRequestBody(layers: layers, destination: destination, encoding: encoding, mode: try r.transferMode()))
        case .dropSession:
            return .dropSession
        case .statsRequest:
            return .statsRequest
        case .statsReply:
            let cacheBytes = try r.u64("kv cache bytes")
            let sessions = try r.int("session count")
            let rejected = try r.traffic("rejected")
            let peers = try r.count("peer count", max: maxStatsPeers, min: 0)
            var byPeer: [String: TrafficByCategory] = [:]
            var previous: String?
            for i in 0..<peers {
                let label = try r.string("peer \(i) label", max: maxPeerLabelLength)
                if let previous, !previous.utf8.lexicographicallyPrecedes(label.utf8) {
                    throw WireError.invalidField(kind: h.kind, field: "peer \(i) label", reason: "labels must be unique and ascending")
                }
                previous = label
                var t = TrafficByCategory()
                for c in TrafficCategory.allCases { t[c] = try r.traffic("peer \(i) \(c.rawValue)") }
                byPeer[label] = t
            }
            var cluster = ClusterStatus(serving: try r.flag("serving"), contextLength: try r.int("context"),
                                        kvSpec: try r.string("kv cache spec", max: maxSpecLength),
                                        dictionaryHash: try r.string("dictionary hash", max: maxHashLength))
            for i in 0..<(try r.count("worker count", max: maxWorkers, min: 0)) {
                cluster.workers.append(WorkerStatus(worker: try r.string("worker \(i) id", max: maxWorkerIDLength),
                                                    ready: try r.flag("worker \(i) ready"), alive: try r.flag("worker \(i) alive"),
                                                    kvBytes: try r.u64("worker \(i) kv bytes")))
            }
            return .statsReply(StatsReplyBody(
                traffic: TrafficSnapshot(byPeer: byPeer, rejected: rejected), kvCacheBytes: cacheBytes,
                sessionCount: sessions, cluster: cluster))
        case .shutdown:
            return .shutdown(reason: try r.string("reason", max: maxReasonLength))
        case .error:
            let raw = try r.u16("code")
            guard let code = WireErrorCode(rawValue: raw) else {
                throw WireError.invalidField(kind: h.kind, field: "code", reason: "unknown error code \(raw)")
            }
            return .error(ErrorBody(code: code, message: try r.string("message", max: maxErrorMessageLength)))
        case .ping:
            return .ping(nonce: try r.u64("nonce"))
        case .pong:
            return .pong(nonce: try r.u64("nonce"))
        case .generateRequest:
            let prompt = try r.string("prompt", max: maxPromptBytes)
            let chat = try r.flag("chat")
            let maxTokens = try r.int("max tokens")
            let temperature = Float(bitPattern: try r.fixed(UInt32.self, "temperature"))
            let topK = try r.int("top k")
            let topP = Float(bitPattern: try r.fixed(UInt32.self, "top p"))
            let seed = try r.u64("seed")
            return .generateRequest(GenerateRequestBody(
                prompt: prompt, chat: chat, maxTokens: maxTokens, temperature: temperature, topK: topK, topP: topP,
                seed: seed, ignoreEOS: try r.flag("ignore eos"), stream: try r.flag("stream")))
        case .generateReply:
            let prompt = try r.tokens("prompt tokens", min: 1)
            let generated = try r.tokens("generated tokens", min: 0)
            return .generateReply(GenerateReplyBody(
                promptTokens: prompt, generatedTokens: generated, text: try r.string("text", max: maxReplyTextBytes),
                prefillNanoseconds: try r.u64("prefill ns"), decodeNanoseconds: try r.u64("decode ns"),
                stopReason: try r.string("stop reason", max: maxEncodingLength),
                kvCache: try r.string("kv cache", max: maxEncodingLength), kvCacheBytes: try r.u64("kv cache bytes"),
                activationBytesSent: try r.u64("activation bytes sent"),
                activationBytesReceived: try r.u64("activation bytes received"),
                kvTransferBytes: try r.u64("kv transfer bytes"), kvTransferNanoseconds: try r.u64("kv transfer ns"),
                kvBaselineBytes: try r.u64("kv baseline bytes"), kvBaselineNanoseconds: try r.u64("kv baseline ns"),
                kvBytesByWorker: try r.workerKV()))
        case .drainRequest:
            let id = try r.string("worker id", max: maxWorkerIDLength)
            let baseline = try r.string("baseline encoding", max: maxEncodingLength)
            return .drainRequest(DrainRequestBody(workerID: id, baseline: baseline, minGenerated: try r.int("min generated")))
        case .drainReply:
            let id = try r.string("worker id", max: maxWorkerIDLength)
            let layers = try r.layers()
            let ns = try r.u64("drain ns")
            let sessions = try r.int("session count")
            let n = try r.count("transfer count", max: maxDrainTransfers, min: 0)
            var transfers: [DrainReplyBody.Transfer] = []
            for i in 0..<n {
                let session = try r.u64("transfer \(i) session id")
                let layers = try r.layers()
                let destination = try r.string("transfer \(i) destination", max: maxWorkerIDLength)
                let encoding = try r.string("transfer \(i) encoding", max: maxEncodingLength)
                let mode = try r.transferMode()
                let tokens = try r.int("transfer \(i) token count")
                transfers.append(DrainReplyBody.Transfer(
                    sessionID: session, layers: layers, destination: destination, encoding: encoding, mode: mode,
                    tokenCount: tokens, payloadBytes: try r.u64("transfer \(i) payload bytes"),
                    wireBytes: try r.u64("transfer \(i) wire bytes"), nanoseconds: try r.u64("transfer \(i) ns")))
            }
            return .drainReply(DrainReplyBody(workerID: id, layers: layers, nanoseconds: ns, sessionCount: sessions, transfers: transfers))
        case .generateToken:
            return .generateToken(Int32(bitPattern: try r.fixed(UInt32.self, "token id")))
        case .generateCancel:
            return .generateCancel
        }
    }
}

// MARK: - Field rules (shared by encode and decode)

extension WireProtocol {
    /// Every rule on field values. Decoding applies it after reading; encoding before
    /// writing, so a local mistake is a local error rather than a peer's refusal.
    static func validate(_ m: WireMessage) throws {
        let kind = m.kind
        let check = FieldRules(kind: kind)
        switch kind.sessionRule {
        case .required: try check.that(m.sessionID != 0, "session id", "0; this kind belongs to a session")
        case .none: try check.that(m.sessionID == 0, "session id", "\(m.sessionID); this kind has no session")
        case .optional: break
        }
        switch m.body {
        case .register(let b):
            try check.identifier(b.workerID, "worker id", max: maxWorkerIDLength)
            try check.connectable(b.peerEndpoint, "peer endpoint")
            try check.that(b.memoryBudgetBytes > 0, "memory budget", "0 bytes")
            try check.hex(b.modelFingerprint, "model fingerprint", required: true)
        case .registerAck(let i):
            try check.range(i, 0..<maxWorkers, "worker index")
        case .shardAssignment(let b):
            try check.range(b.modelLayers, 1...maxLayers, "model layers")
            try check.layers(b.layers, upTo: b.modelLayers)
            try check.printable(b.kvSpec, "kv cache spec", max: maxSpecLength)
            let csr = (try? KVCacheFormats.format(spec: b.kvSpec))?.needsDictionary ?? false
            try check.hex(b.dictionaryHash, "dictionary hash", required: csr)
            try check.that(csr || b.dictionaryHash.isEmpty, "dictionary hash", "set for the dictionary-free spec '\(b.kvSpec)'")
            try check.range(b.contextCapacity, 1...maxContext, "context capacity")
            if case .peer(let e) = b.nextHop { try check.connectable(e, "next hop endpoint") }
        case .shardReady(let b):
            try check.layers(b.layers, upTo: maxLayers)
        case .dictionary(let b):
            try check.hex(b.contentHash, "content hash", required: true)
            try check.length(b.gguf.count, "gguf", max: maxDictionaryBytes)
            try check.that(b.gguf.starts(with: Array("GGUF".utf8)), "gguf", "does not start with the GGUF magic")
        case .dictionaryAck(let hash):
            try check.hex(hash, "content hash", required: true)
        case .activations(let b):
            try check.range(b.nextLayer, 0...maxLayers, "next layer")
            try check.length(b.tokenCount, "token count", max: maxTokensPerActivation)
            try check.range(b.tokenCount, 1...maxTokensPerActivation, "token count")
            try check.length(b.hiddenDim, "hidden dim", max: maxHiddenDim)
            try check.range(b.hiddenDim, 1...maxHiddenDim, "hidden dim")
            try check.range(b.startPosition, 0...(maxContext - b.tokenCount), "start position")
            try check.that(b.hidden.count == b.tokenCount * b.hiddenDim, "hidden states",
                           "\(b.hidden.count) floats for (\(b.tokenCount), \(b.hiddenDim))")
            try check.workerKV(b.kvBytesByWorker)
            if let i = b.hidden.firstIndex(where: { !$0.isFinite }) {
                throw WireError.nonFiniteValue(kind: kind, field: "hidden states", index: i)
            }
        case .kvTransfer(let b):
            try check.layers(b.layers, upTo: maxLayers)
            try check.encoding(b.encoding)
            let csr = KVCacheFormats.needsDictionary(kind: b.encoding)
            try check.hex(b.dictionaryHash, "dictionary hash", required: csr)
            try check.that(csr || b.dictionaryHash.isEmpty, "dictionary hash", "set for the dictionary-free encoding '\(b.encoding)'")
            try check.length(b.payload.count, "payload", max: maxMessageBytes)
            let header: KVPayloadHeader
            do {
                header = try b.payload.withUnsafeBytes { raw in
                    var r = BinaryReader(raw)
                    return try KVPayloadHeader.read(from: &r)
                }
            } catch {
                throw WireError.invalidField(kind: kind, field: "payload", reason: error.localizedDescription)
            }
            try check.that(header.kind == b.encoding, "payload", "holds a '\(header.kind)' cache, the message says '\(b.encoding)'")
            try check.that(header.layers == b.layers, "payload",
                           "holds layers \(header.layers.lowerBound)..<\(header.layers.upperBound), the message says \(b.layers.lowerBound)..<\(b.layers.upperBound)")
        case .kvTransferAck(let b):
            try check.layers(b.layers, upTo: maxLayers)
            try check.range(b.tokenCount, 0...maxContext, "token count")
            try check.that(b.wireBytes >= b.payloadBytes, "wire bytes", "\(b.wireBytes), fewer than the \(b.payloadBytes) payload bytes")
        case .kvRequest(let b):
            try check.layers(b.layers, upTo: maxLayers)
            try check.connectable(b.destination, "destination")
            try check.encoding(b.encoding)
        case .dropSession, .statsRequest, .ping, .pong, .generateCancel:
            break
        case .generateToken(let token):
            try check.that(token >= 0, "token id", "\(token); negative")
        case .statsReply(let b):
            try check.range(b.sessionCount, 0...maxSessions, "session count")
            try check.length(b.traffic.byPeer.count, "peer count", max: maxStatsPeers)
            for label in b.traffic.byPeer.keys {
                try check.length(label.utf8.count, "peer label", max: maxPeerLabelLength)
                try check.that(!label.isEmpty, "peer label", "empty")
            }
            let c = b.cluster
            try check.range(c.contextLength, 0...maxContext, "context")
            if !c.kvSpec.isEmpty { try check.printable(c.kvSpec, "kv cache spec", max: maxSpecLength) }
            try check.hex(c.dictionaryHash, "dictionary hash", required: false)
            try check.length(c.workers.count, "worker count", max: maxWorkers)
            for w in c.workers { try check.identifier(w.worker, "worker id", max: maxWorkerIDLength) }
        case .shutdown(let reason):
            try check.length(reason.utf8.count, "reason", max: maxReasonLength)
        case .error(let b):
            try check.length(b.message.utf8.count, "message", max: maxErrorMessageLength)
        case .generateRequest(let b):
            try check.length(b.prompt.utf8.count, "prompt", max: maxPromptBytes)
            try check.range(b.maxTokens, 0...maxContext, "max tokens")
            try check.that(b.temperature.isFinite && b.temperature >= 0, "temperature", "\(b.temperature); must be finite and >= 0")
            try check.range(b.topK, 0...maxTopK, "top k")
            try check.that(b.topP.isFinite && b.topP > 0 && b.topP <= 1, "top p", "\(b.topP); must be in (0, 1]")
        case .generateReply(let b):
            try check.range(b.promptTokens.count, 1...maxContext, "prompt tokens")
            try check.range(b.generatedTokens.count, 0...maxContext, "generated tokens")
            try check.that((b.promptTokens + b.generatedTokens).allSatisfy { $0 >= 0 }, "tokens", "negative token id")
            try check.length(b.text.utf8.count, "text", max: maxReplyTextBytes)
            try check.identifier(b.stopReason, "stop reason", max: maxEncodingLength)
            try check.identifier(b.kvCache, "kv cache", max: maxEncodingLength)
            try check.workerKV(b.kvBytesByWorker)
        case .drainRequest(let b):
            try check.identifier(b.workerID, "worker id", max: maxWorkerIDLength)
            if !b.baseline.isEmpty { try check.encoding(b.baseline) }
            try check.range(b.minGenerated, 0...maxContext, "min generated")
        case .drainReply(let b):
            try check.identifier(b.workerID, "worker id", max: maxWorkerIDLength)
            try check.layers(b.layers, upTo: maxLayers)
            try check.range(b.sessionCount, 0...maxSessions, "session count")
            try check.length(b.transfers.count, "transfer count", max: maxDrainTransfers)
            for t in b.transfers {
                try check.that(t.sessionID != 0, "transfer session id", "0")
                try check.layers(t.layers, upTo: maxLayers)
                try check.identifier(t.destination, "transfer destination", max: maxWorkerIDLength)
                try check.encoding(t.encoding)
                try check.range(t.tokenCount, 0...maxContext, "transfer token count")
                try check.that(t.wireBytes >= t.payloadBytes, "transfer wire bytes", "fewer than its payload bytes")
            }
        }
    }
}

// MARK: - Names

extension WireProtocol {
    /// Bytes allowed in a worker id: A-Z a-z 0-9 . _ -
    static func isIdentifierByte(_ c: UInt8) -> Bool {
        (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c)
            || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
    }

    /// How a ZeroMQ routing id names its peer in byte counters, stats replies and errors:
    /// as text when it is a valid worker id (workers set their routing id to it), else "0x"
    /// and hex (libzmq's generated ids are binary).
    public static func peerLabel(routingID id: [UInt8]) -> String {
        if !id.isEmpty, id.count <= maxWorkerIDLength, id.allSatisfy(isIdentifierByte) {
            return String(decoding: id, as: UTF8.self)
        }
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        return "0x" + String(decoding: id.flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 15)]] }, as: UTF8.self)
    }
}
