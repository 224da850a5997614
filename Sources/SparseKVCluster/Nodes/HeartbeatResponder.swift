import Foundation
import Logging

/// A worker's side of the heartbeat, on a thread of its own so that a worker busy in a
/// long prefill or a layer load still answers: a DEALER to the coordinator with routing
/// id "<worker id>.hb" answers every ping with a pong. When no ping came for `liveness`
/// intervals, the coordinator is gone (or has declared this worker dead): `onLost` runs
/// once, and the thread ends.
final class HeartbeatResponder: @unchecked Sendable {
    // @unchecked: `finished` is behind `lock`; the socket is used by the thread only.
    private let lock = NSLock()
    private var finished = false
    private var started = false
    private var lostSilence: Duration?
    private let done = DispatchSemaphore(value: 0)
    private let socket: CountedSocket
    private let settings: HeartbeatMonitor.Settings
    private let logger: Logger

    /// Connects the heartbeat socket (nothing is sent until the coordinator pings).
    init(context: ZMQContext, coordinator: String, workerID: String, counters: ByteCounters,
         settings: HeartbeatMonitor.Settings, security: NodeSecurity, logger: Logger) throws {
        var options = ZMQSocketOptions()
        options.routingID = WireProtocol.heartbeatRoutingID(worker: workerID)
        options.linger = .zero
        // Counted apart from the main link, as the coordinator counts "<id>.hb" apart from "<id>".
        socket = try CountedSocket(context: context, kind: .dealer, counters: counters,
                                   peerLabel: coordinatorPeerID + WireProtocol.heartbeatSuffix, options: security.client(options))
        try socket.connect(coordinator)
        self.settings = settings
        self.logger = logger
    }

    /// Starts answering; the silence counts from now.
    func start(onLost: @escaping @Sendable (Duration) -> Void) {
        lock.withLock { started = true }
        Thread.detachNewThread { [self] in
            var lastPing = ContinuousClock.now, lastLoop = lastPing
            while !isFinished {
                // A thread held up for long (a busy machine) did not read the pings meanwhile.
                let gap = ContinuousClock.now - lastLoop
                if gap > settings.interval * 2 { lastPing += gap - settings.interval }
                lastLoop = .now
                do {
                    if let r = try socket.receive(timeout: settings.interval / 2), case .success(let m) = r.result,
                       case .ping(let nonce) = m.body {
                        lastPing = .now
                        try socket.send(WireMessage(.pong(nonce: nonce), requestID: m.requestID), timeout: .zero)
                    }
                } catch {
                    logger.debug("heartbeat: \(error.localizedDescription)")
                }
                let silence = ContinuousClock.now - lastPing
                if silence > settings.deadAfter, !isFinished {
                    lock.withLock { lostSilence = silence }
                    onLost(silence)
                    break
                }
            }
            socket.close()
            done.signal()
        }
    }

    private var isFinished: Bool { lock.withLock { finished } }

    /// The silence after which the coordinator counted as gone; nil while it pings.
    var lostAfter: Duration? { lock.withLock { lostSilence } }

    /// Ends the thread and waits for it (at most about half an interval).
    func stop() {
        let running = lock.withLock { () -> Bool in
            defer { finished = true }
            return started && !finished
        }
        if running { done.wait() } else if !lock.withLock({ started }) { socket.close() }
    }
}
