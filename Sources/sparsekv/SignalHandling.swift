import Foundation
import SparseKVCluster

/// Raises `stop` on SIGINT or SIGTERM (instead of dying mid-message), so serving loops
/// finish their message, tell their peers, close their sockets and exit.
func stopOnSignals(_ stop: StopSignal) -> [DispatchSourceSignal] {
    [SIGINT, SIGTERM].map { sig in
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { stop.raise() }
        source.resume()
        return source
    }
}

/// Parses a byte count with an optional binary suffix: 512M, 4G, 1048576.
func parseBytes(_ s: String) -> UInt64? {
    let units: [Character: UInt64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40]
    var text = s.lowercased()
    if text.hasSuffix("b") { text.removeLast() }
    var scale: UInt64 = 1
    if let last = text.last, let u = units[last] {
        scale = u
        text.removeLast()
    }
    guard let v = Double(text), v > 0, v * Double(scale) < 1.8e19 else { return nil }
    return UInt64(v * Double(scale))
}

/// Writes one line to stdout at once (unbuffered), for readers waiting on it.
func printOut(_ s: String) {
    FileHandle.standardOutput.write((s + "\n").data(using: .utf8)!)
}
