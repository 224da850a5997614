import Foundation

/// One tensor's entry in a GGUF tensor table.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// ggml order: `shape[0]` is the contiguous (row) length. A weight matrix with
    /// `shape == [in, out]` holds `out` rows of `in` elements.
    public let shape: [Int]
    public let type: GGMLType
    /// Byte offset from the start of the file.
    public let fileOffset: Int
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A GGUF file (versions 2 and 3), memory-mapped read-only.
///
/// Parsing checks every length and offset against the file size, so a truncated or
/// corrupt file is a `GGUFError`, never a crash. Tensor data stays in the mapping; only
/// the pages of tensors that are read become resident, which is how a worker loads just
/// its layers.
public final class GGUFFile: @unchecked Sendable {
    public static let magic: UInt32 = 0x4655_4747  // "GGUF" little-endian
    public static let defaultAlignment = 32

    public let path: String
    public let version: UInt32
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Start of the tensor data section.
    public let dataOffset: Int

    private let tensorIndex: [String: Int]
    private let base: UnsafeMutableRawPointer?
    private let size: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw GGUFError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw GGUFError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw GGUFError.cannotOpen(path: path, reason: "not a regular file") }
        size = Int(st.st_size)
        if size > 0 {
            let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
            guard let p, p != MAP_FAILED else {
                throw GGUFError.cannotOpen(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
            }
            base = p
        } else {
            base = nil
        }
        do {
            var r = Reader(base: base.map { UnsafeRawPointer($0) }, size: size, path: path)
            let magic = try r.u32("magic")
            guard magic == Self.magic else { throw GGUFError.badMagic(path: path, found: magic) }
            version = try r.u32("version")
            guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(path: path, version: version) }
            let nTensors = try r.count("tensor count")
            let nKV = try r.count("metadata count")

            var keys: [String] = []
            var meta: [String: GGUFValue] = [:]
            for _ in 0..<nKV {
                let key = try r.string("metadata key")
                let rawType = try r.u32("type of '\(key)'")
                guard let type = GGUFValueType(rawValue: rawType) else {
                    throw GGUFError.malformed(path: path, what: "metadata '\(key)' has unknown value type \(rawType)")
                }
                let value = try r.value(type, key: key, depth: 0)
                if meta.updateValue(value, forKey: key) != nil {
                    throw GGUFError.malformed(path: path, what: "duplicate metadata key '\(key)'")
                }
                keys.append(key)
            }
            metadataKeys = keys
            metadata = meta

            var align = Self.defaultAlignment
            if let a = meta["general.alignment"] {
                guard case .uint32 = a, let v = a.intValue, v > 0, v & (v - 1) == 0 else {
                    throw GGUFError.malformed(path: path, what: "general.alignment must be a power of two")
                }
                align = v
            }
            alignment = align

            struct Raw { var name: String; var shape: [Int]; var type: GGMLType; var offset: Int }
            var raws: [Raw] = []
            // Each entry takes at least 24 bytes; never trust a count beyond that.
            raws.reserveCapacity(min(nTensors, r.remaining / 24))
            for _ in 0..<nTensors {
                let name = try r.string("tensor name")
                let nDims = Int(try r.u32("dimensions of '\(name)'"))
                guard (1...4).contains(nDims) else {
                    throw GGUFError.malformed(path: path, what: "tensor '\(name)' has \(nDims) dimensions (1 to 4 allowed)")
                }
                var shape: [Int] = []
                var total = 1
                for _ in 0..<nDims {
                    let d = try r.u64("shape of '\(name)'")
                    guard d > 0, d < UInt64(Int32.max) else {
                        throw GGUFError.malformed(path: path, what: "tensor '\(name)' has dimension \(d)")
                    }
                    let (t, o) = total.multipliedReportingOverflow(by: Int(d))
                    guard !o else { throw GGUFError.malformed(path: path, what: "tensor '\(name)' is too large") }
                    total = t
                    shape.append(Int(d))
                }
                let typeID = try r.u32("type of '\(name)'")
                guard let type = GGMLType(rawValue: typeID) else {
                    throw GGUFError.unknownTensorType(path: path, tensor: name, typeID: typeID)
                }
                guard shape[0] % type.blockSize == 0 else {
                    throw GGUFError.malformed(path: path, what: "tensor '\(name)' row length \(shape[0]) is not a multiple of \(type)'s block size \(type.blockSize)")
                }
                let off = try r.u64("offset of '\(name)'")
                guard off < UInt64(size) else { throw GGUFError.tensorOutOfRange(path: path, tensor: name) }
                guard Int(off) % align == 0 else {
                    throw GGUFError.malformed(path: path, what: "tensor '\(name)' offset \(off) is not aligned to \(align)")
                }
                raws.append(Raw(name: name, shape: shape, type: type, offset: Int(off)))
            }
            let data = (r.position + align - 1) / align * align
            dataOffset = data

            var infos: [GGUFTensorInfo] = []
            var index: [String: Int] = [:]
            for raw in raws {
                guard let bytes = raw.type.byteCount(elements: raw.shape.reduce(1, *)) else {
                    throw GGUFError.malformed(path: path, what: "tensor '\(raw.name)' size overflows")
                }
                let start = data + raw.offset
                guard start <= size, bytes <= size - start else {
                    throw GGUFError.tensorOutOfRange(path: path, tensor: raw.name)
                }
                guard index.updateValue(infos.count, forKey: raw.name) == nil else {
                    throw GGUFError.malformed(path: path, what: "duplicate tensor name '\(raw.name)'")
                }
                infos.append(GGUFTensorInfo(name: raw.name, shape: raw.shape, type: raw.type, fileOffset: start, byteCount: bytes))
            }
            tensors = infos
            tensorIndex = index
        } catch {
            if let base { munmap(base, size) }
            throw error
        }
    }

    deinit {
        if let base { munmap(base, size) }
    }

    // MARK: - Tensors

    public func tensorInfo(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The raw bytes of a tensor, valid as long as this object lives.
    public func rawData(_ info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + info.fileOffset, count: info.byteCount)
    }

    /// Looks a tensor up and checks its shape (ggml order) when `shape` is given.
    public func requireTensor(_ name: String, shape: [Int]? = nil) throws -> GGUFTensorInfo {
        guard let info = tensorInfo(name) else { throw GGUFError.missingTensor(path: path, tensor: name) }
        if let shape, shape != info.shape {
            throw GGUFError.badTensorShape(path: path, tensor: name, expected: shape, found: info.shape)
        }
        return info
    }

    /// A tensor converted to fp32, row-major with `shape[0]` contiguous.
    public func floats(_ name: String, shape: [Int]? = nil) throws -> [Float] {
        let info = try requireTensor(name, shape: shape)
        return [Float](unsafeUninitializedCapacity: info.elementCount) { buf, n in
            Dequantize.run(info.type, from: rawData(info), into: UnsafeMutableBufferPointer(rebasing: buf[0..<info.elementCount]))
            n = info.elementCount
        }
    }

    // MARK: - Metadata

    public func value(_ key: String) throws -> GGUFValue {
        guard let v = metadata[key] else { throw GGUFError.missingKey(path: path, key: key) }
        return v
    }

    public func int(_ key: String) throws -> Int {
        guard let v = try value(key).intValue else { throw GGUFError.wrongKeyType(path: path, key: key, expected: "an integer") }
        return v
    }

    public func float(_ key: String) throws -> Float {
        guard let v = try value(key).doubleValue else { throw GGUFError.wrongKeyType(path: path, key: key, expected: "a number") }
        return Float(v)
    }

    public func string(_ key: String) throws -> String {
        guard let v = try value(key).stringValue else { throw GGUFError.wrongKeyType(path: path, key: key, expected: "a string") }
        return v
    }

    public func stringArray(_ key: String) throws -> [String] {
        guard let a = try value(key).arrayValue else { throw GGUFError.wrongKeyType(path: path, key: key, expected: "an array") }
        return try a.map {
            guard let s = $0.stringValue else { throw GGUFError.wrongKeyType(path: path, key: key, expected: "an array of strings") }
            return s
        }
    }

    public func intArray(_ key: String) throws -> [Int] {
        guard let a = try value(key).arrayValue else { throw GGUFError.wrongKeyType(path: path, key: key, expected: "an array") }
        return try a.map {
            guard let s = $0.intValue else { throw GGUFError.wrongKeyType(path: path, key: key, expected: "an array of integers") }
            return s
        }
    }

    public func floatArray(_ key: String) throws -> [Float] {
        guard let a = try value(key).arrayValue else { throw GGUFError.wrongKeyType(path: path, key: key, expected: "an array") }
        return try a.map {
            guard let s = $0.doubleValue else { throw GGUFError.wrongKeyType(path: path, key: key, expected: "an array of numbers") }
            return Float(s)
        }
    }
}

// MARK: - Bounds-checked little-endian reader

private struct Reader {
    let base: UnsafeRawPointer?
    let size: Int
    let path: String
    var position = 0

    init(base: UnsafeRawPointer?, size: Int, path: String) {
        self.base = base
        self.size = size
        self.path = path
    }

    mutating func bytes(_ n: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= size - position, let base else { throw GGUFError.truncated(path: path, what: what) }
        defer { position += n }
        return UnsafeRawBufferPointer(start: base + position, count: n)
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let b = try bytes(MemoryLayout<T>.size, what)
        return T(littleEndian: b.loadUnaligned(as: T.self))
    }

    mutating func u32(_ what: String) throws -> UInt32 { try load(UInt32.self, what) }
    mutating func u64(_ what: String) throws -> UInt64 { try load(UInt64.self, what) }

    var remaining: Int { size - position }

    /// A u64 count that must fit what is left of the file (each item takes at least a byte).
    mutating func count(_ what: String) throws -> Int {
        let n = try u64(what)
        guard n <= UInt64(remaining) else {
            throw GGUFError.malformed(path: path, what: "\(what) \(n) exceeds the \(remaining) bytes left (corrupt or truncated file)")
        }
        return Int(n)
    }

    mutating func string(_ what: String) throws -> String {
        let n = try count("length of \(what)")
        let b = try bytes(n, what)
        return String(decoding: b, as: UTF8.self)
    }

    mutating func value(_ type: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
        let what = "value of '\(key)'"
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, what))
        case .int8: return .int8(try load(Int8.self, what))
        case .uint16: return .uint16(try load(UInt16.self, what))
        case .int16: return .int16(try load(Int16.self, what))
        case .uint32: return .uint32(try load(UInt32.self, what))
        case .int32: return .int32(try load(Int32.self, what))
        case .uint64: return .uint64(try load(UInt64.self, what))
        case .int64: return .int64(try load(Int64.self, what))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, what)))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, what)))
        case .bool:
            let b = try load(UInt8.self, what)
            guard b <= 1 else { throw GGUFError.malformed(path: path, what: "'\(key)' has bool value \(b)") }
            return .bool(b == 1)
        case .string: return .string(try string(what))
        case .array:
            guard depth == 0 else { throw GGUFError.malformed(path: path, what: "'\(key)' nests arrays") }
            let rawType = try u32("array type of '\(key)'")
            guard let et = GGUFValueType(rawValue: rawType) else {
                throw GGUFError.malformed(path: path, what: "array '\(key)' has unknown element type \(rawType)")
            }
            let n = try count("length of array '\(key)'")
            var items: [GGUFValue] = []
            items.reserveCapacity(min(n, remaining))
            for _ in 0..<n { items.append(try value(et, key: key, depth: depth + 1)) }
            return .array(elementType: et, items)
        }
    }
}
