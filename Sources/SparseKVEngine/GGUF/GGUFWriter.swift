import Foundation

/// Builds a GGUF file (version 3 by default) from metadata and tensors held in memory.
///
/// The layout is the one ggml's `gguf_write_to_buf` produces: header, metadata in
/// insertion order, the tensor table, zero padding up to the alignment, then each
/// tensor's bytes padded to the alignment (the last one too), with tensor offsets
/// relative to the start of the data section. Used by tests to make tiny synthetic
/// models and by tools that write dictionary files.
///
/// ```swift
/// var w = GGUFWriter()
/// w.set("general.architecture", .string("llama"))
/// try w.addTensor(name: "output_norm.weight", shape: [64], floats: norm)
/// try w.write(to: path)
/// ```
public struct GGUFWriter: Sendable {
    /// Why a writer could not produce a file. Cases name the key, tensor or path.
    public enum Error: LocalizedError, Sendable, Equatable {
        case duplicateTensor(name: String)
        case badShape(tensor: String, shape: [Int], reason: String)
        case byteCountMismatch(tensor: String, type: GGMLType, expected: Int, found: Int)
        case unsupportedQuantization(tensor: String, type: GGMLType)
        case badArray(key: String, reason: String)
        case badAlignment(Int)
        case cannotWrite(path: String, reason: String)

        public var errorDescription: String? {
            switch self {
            case .duplicateTensor(let n):
                return "GGUF writer: tensor '\(n)' was added twice."
            case .badShape(let n, let s, let r):
                return "GGUF writer: tensor '\(n)' has shape \(s): \(r)."
            case .byteCountMismatch(let n, let t, let e, let f):
                return "GGUF writer: tensor '\(n)' of type \(t) needs \(e) bytes for its shape, got \(f)."
            case .unsupportedQuantization(let n, let t):
                return "GGUF writer: cannot quantize tensor '\(n)' to \(t); pass its raw bytes instead."
            case .badArray(let k, let r):
                return "GGUF writer: metadata array '\(k)' \(r)."
            case .badAlignment(let a):
                return "GGUF writer: alignment \(a) is not a positive power of two (set general.alignment to e.g. 32)."
            case .cannotWrite(let p, let r):
                return "\(p): cannot write GGUF file (\(r)). Check the directory exists and is writable."
            }
        }
    }

    /// One tensor to be written: name, shape in ggml order (`shape[0]` contiguous), type
    /// and its raw bytes.
    public struct Tensor: Sendable, Equatable {
        public let name: String
        public let shape: [Int]
        public let type: GGMLType
        public let bytes: [UInt8]
    }

    /// GGUF version written to the header (2 and 3 share this layout).
    public var version: UInt32 = 3
    /// Metadata in the order it will be written.
    public private(set) var metadata: [(key: String, value: GGUFValue)] = []
    /// Tensors in the order their table entries and data will be written.
    public private(set) var tensors: [Tensor] = []

    /// A writer aligning tensor data to `alignment` bytes. Any value other than ggml's
    /// default of 32 is recorded as `general.alignment`, as readers expect.
    public init(alignment: Int = GGUFFile.defaultAlignment) {
        if alignment != GGUFFile.defaultAlignment {
            set("general.alignment", .uint32(UInt32(clamping: alignment)))
        }
    }

    // MARK: - Metadata

    /// Sets `key` to `value`. A new key goes last; an existing key keeps its position.
    public mutating func set(_ key: String, _ value: GGUFValue) {
        if let i = metadata.firstIndex(where: { $0.key == key }) {
            metadata[i].value = value
        } else {
            metadata.append((key, value))
        }
    }

    /// Sets `key` to an array of strings.
    public mutating func set(_ key: String, strings: [String]) {
        set(key, .array(elementType: .string, strings.map { .string($0) }))
    }

    /// Sets `key` to an array of Float32 values.
    public mutating func set(_ key: String, floats: [Float]) {
        set(key, .array(elementType: .float32, floats.map { .float32($0) }))
    }

    /// Sets `key` to an array of Int32 values.
    public mutating func set(_ key: String, int32s: [Int32]) {
        set(key, .array(elementType: .int32, int32s.map { .int32($0) }))
    }

    /// The alignment the file will use: `general.alignment` if set, else 32.
    public func alignment() throws -> Int {
        guard let v = metadata.first(where: { $0.key == "general.alignment" })?.value else {
            return GGUFFile.defaultAlignment
        }
        // ggml stores it as u32; accept any integer kind but insist on a power of two.
        guard let a = v.intValue, a > 0, a & (a - 1) == 0 else { throw Error.badAlignment(v.intValue ?? -1) }
        return a
    }

    // MARK: - Tensors

    /// Adds a tensor from its raw bytes, which must be exactly the size of `shape` in
    /// `type` (see `GGMLType.byteCount(elements:)`).
    public mutating func addTensor(name: String, shape: [Int], type: GGMLType, bytes: [UInt8]) throws {
        guard !tensors.contains(where: { $0.name == name }) else { throw Error.duplicateTensor(name: name) }
        guard (1...4).contains(shape.count) else {
            throw Error.badShape(tensor: name, shape: shape, reason: "GGUF tensors have 1 to 4 dimensions")
        }
        guard shape.allSatisfy({ $0 > 0 }) else {
            throw Error.badShape(tensor: name, shape: shape, reason: "every dimension must be positive")
        }
        guard shape[0] % type.blockSize == 0 else {
            throw Error.badShape(tensor: name, shape: shape,
                                 reason: "row length is not a multiple of \(type)'s block size \(type.blockSize)")
        }
        var count = 1
        for d in shape {
            let (c, o) = count.multipliedReportingOverflow(by: d)
            guard !o else { throw Error.badShape(tensor: name, shape: shape, reason: "too many elements") }
            count = c
        }
        guard let expected = type.byteCount(elements: count) else {
            throw Error.badShape(tensor: name, shape: shape, reason: "too many elements")
        }
        guard expected == bytes.count else {
            throw Error.byteCountMismatch(tensor: name, type: type, expected: expected, found: bytes.count)
        }
        tensors.append(Tensor(name: name, shape: shape, type: type, bytes: bytes))
    }

    /// Adds a tensor from fp32 values, stored as `type` (F32 by default). Every type
    /// with a quantizer in `Quantize` is accepted; Q4_K and Q6_K are not.
    public mutating func addTensor(name: String, shape: [Int], floats: [Float], as type: GGMLType = .f32) throws {
        guard shape.count >= 1, shape[0] > 0, shape[0] % type.blockSize == 0,
              floats.count == shape.reduce(1, { $0 &* $1 }) else {
            throw Error.badShape(tensor: name, shape: shape,
                                 reason: "does not fit \(floats.count) values in whole \(type) blocks")
        }
        guard let bytes = Quantize.quantize(floats, to: type) else {
            throw Error.unsupportedQuantization(tensor: name, type: type)
        }
        try addTensor(name: name, shape: shape, type: type, bytes: bytes)
    }

    // MARK: - Output

    /// The whole file as bytes.
    public func data() throws -> Data {
        let align = try alignment()
        var out = ByteWriter()
        out.u32(GGUFFile.magic)
        out.u32(version)
        out.u64(UInt64(tensors.count))
        out.u64(UInt64(metadata.count))

        for (key, value) in metadata {
            out.string(key)
            try out.value(value, key: key)
        }

        // Offsets are relative to the data section and each tensor starts aligned.
        var offset = 0
        for t in tensors {
            out.string(t.name)
            out.u32(UInt32(t.shape.count))
            for d in t.shape { out.u64(UInt64(d)) }
            out.u32(t.type.rawValue)
            out.u64(UInt64(offset))
            offset += padded(t.bytes.count, align)
        }
        out.pad(align)

        for t in tensors {
            out.bytes.append(contentsOf: t.bytes)
            out.pad(align)
        }
        return out.bytes
    }

    /// Writes the file to `path` through `path + ".tmp"` and a rename, so a reader never
    /// sees a half-written file and a failed write leaves any old file in place.
    public func write(to path: String) throws {
        let bytes = try data()
        let tmp = path + ".tmp"
        do {
            try bytes.write(to: URL(fileURLWithPath: tmp))
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw Error.cannotWrite(path: path, reason: error.localizedDescription)
        }
        guard rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: tmp)
            throw Error.cannotWrite(path: path, reason: "rename from \(tmp) failed: \(reason)")
        }
    }

    private func padded(_ n: Int, _ align: Int) -> Int { (n + align - 1) / align * align }
}

// MARK: - Little-endian serialisation

/// Appends GGUF's little-endian encodings to a byte buffer.
private struct ByteWriter {
    var bytes = Data()

    mutating func int<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func u32(_ v: UInt32) { int(v) }
    mutating func u64(_ v: UInt64) { int(v) }

    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u64(UInt64(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    mutating func pad(_ align: Int) {
        let extra = (align - bytes.count % align) % align
        bytes.append(contentsOf: repeatElement(0, count: extra))
    }

    /// Type id then payload; arrays carry their element type and count first.
    mutating func value(_ v: GGUFValue, key: String) throws {
        u32(Self.type(of: v).rawValue)
        try payload(v, key: key)
    }

    private mutating func payload(_ v: GGUFValue, key: String) throws {
        switch v {
        case .uint8(let x): int(x)
        case .int8(let x): int(x)
        case .uint16(let x): int(x)
        case .int16(let x): int(x)
        case .uint32(let x): int(x)
        case .int32(let x): int(x)
        case .uint64(let x): int(x)
        case .int64(let x): int(x)
        case .float32(let x): int(x.bitPattern)
        case .float64(let x): int(x.bitPattern)
        case .bool(let x): int(UInt8(x ? 1 : 0))
        case .string(let s): string(s)
        case .array(let et, let items):
            // Readers (ggml's and ours) reject nested arrays, so never write one.
            guard et != .array else { throw GGUFWriter.Error.badArray(key: key, reason: "nests arrays") }
            for (i, item) in items.enumerated() where Self.type(of: item) != et {
                throw GGUFWriter.Error.badArray(
                    key: key, reason: "is declared \(et) but element \(i) is \(Self.type(of: item))")
            }
            u32(et.rawValue)
            u64(UInt64(items.count))
            for item in items { try payload(item, key: key) }
        }
    }

    static func type(of v: GGUFValue) -> GGUFValueType {
        switch v {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }
}
