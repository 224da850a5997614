import SparseKVEngine

/// Where encoded fields go: the real writer, or a counter that only adds up sizes.
protocol WireSink {
    mutating func write<T: FixedWidthInteger>(_ v: T)
    mutating func write(_ s: String)
    mutating func writeBlob(_ b: [UInt8])
    mutating func writeFloats(_ f: [Float])
}

extension WireSink {
    mutating func writeLayers(_ r: Range<Int>) {
        write(UInt32(r.lowerBound))
        write(UInt32(r.upperBound))
    }

    mutating func writeTraffic(_ t: TrafficCount) {
        write(t.sentBytes)
        write(t.sentMessages)
        write(t.receivedBytes)
        write(t.receivedMessages)
    }
}

extension BinaryWriter: WireSink {
    mutating func writeBlob(_ b: [UInt8]) {
        write(UInt32(b.count))
        write(array: b)
    }

    mutating func writeFloats(_ f: [Float]) { write(array: f) }
}

/// Counts the bytes a body will take.
struct SizeCounter: WireSink {
    var count = 0
    mutating func write<T: FixedWidthInteger>(_ v: T) { count += MemoryLayout<T>.size }
    mutating func write(_ s: String) { count += 4 + s.utf8.count }
    mutating func writeBlob(_ b: [UInt8]) { count += 4 + b.count }
    mutating func writeFloats(_ f: [Float]) { count += 4 * f.count }
}
