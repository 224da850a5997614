import Foundation
import SparseKVEngine

// Measured replica streaming, the coordinator's side. Kept replicas (requested at a
// session's first decode step, installed after a failover) are decided by the core
// (CoordinatorCore+Sessions.swift); the loop only sends its kvRequests.

extension Coordinator {
    /// Measured streaming (`--replicate`, when no replicas are kept): asks every worker of the
    /// session's pipeline to stream its decoded tokens' KV to a peer, which checks and discards it.
    func startStreaming(_ sessionID: UInt64, pipeline p: Int) {
        let line = pipeline(p), other = pipeline(1 - p)
        for (position, i) in line.enumerated() {
            let target = other.count == line.count ? other[position] : line[(position + 1) % line.count]
            guard target != i, let layers = workers[i].layers else { continue }
            sendToWorker(i, WireMessage(.kvRequest(KVRequestBody(layers: layers, destination: workers[target].endpoint,
                                                                 encoding: cacheKind, mode: .stream)),
                                        requestID: takeControlID(), sessionID: sessionID))
        }
    }
}
