import Foundation
import Logging

// Carrying out what CoordinatorCore decided: sockets, logs and the sessions.

extension Coordinator {
    /// Does `actions` in order. Throws when startup cannot go on (``CoordinatorAction/abort(_:)``,
    /// a plan worker's link that cannot be opened).
    func carryOut(_ actions: [CoordinatorAction], answering received: ReceivedMessage? = nil, requestID: UInt64 = 0) throws {
        for action in actions {
            switch action {
            case .answer(let body):
                if let received { answer(received, body, requestID: requestID) }
            case .sendToClient(let client, let m):
                sendToClient(client, m)
            case .connect(let id):
                try connect(id)
            case .connectStandby(let id):
                do { try connect(id) } catch {
                    logger.error("cannot connect to standby \(id): \(error.localizedDescription)")
                    core.standbyUnreachable(id)
                    return
                }
            case .disconnect(let id, let linger):
                guard let link = links.removeValue(forKey: id) else { continue }
                if let linger { link.close(linger: linger) } else { link.close() }
            case .send(let id, let m):
                sendToWorker(id, m)
            case .sendDictionary(let id):
                if let d = dictionary { sendToWorker(id, WireMessage(.dictionary(DictionaryBody(contentHash: d.hash, gguf: d.gguf)))) }
            case .ping(let id, let nonce):
                // A heartbeat socket not connected yet (a worker still starting) is skipped:
                // its silence counts from its registration.
                do {
                    try router.send(WireMessage(.ping(nonce: nonce)), to: WireProtocol.heartbeatRoutingID(worker: id), timeout: .zero)
                } catch {
                    logger.debug("ping to \(id): \(error.localizedDescription)")
                }
            case .log(let level, let line):
                logger.log(level: level, "\(line)")
            case .serving:
                becameReady = true
            case .abort(let error):
                throw error
            case .resumeParked:
                resumeParked()
            case .failParked(let why):
                failParked(why)
            case .failSession(let id, let code, let message):
                fail(id, code: code, message: message)
            case .finishHandoff(let id):
                finishHandoff(id)
            case .pauseSessions:
                pauseSessions()
            case .rebuildSessions(let lost, let elapsed):
                rebuildSessions(lost: lost, milliseconds: elapsed)
            case .resumeSession(let id, let q):
                active[id]?.resumedAt = q
                resumeSession(id) { try $0.resume(at: q, model: model) }
            case .recomputeSession(let id):
                active[id]?.resumedAt = nil
                resumeSession(id) { try $0.restart(model: model) }
            case .giveUp(let why):
                failEverything(why)
            }
        }
    }

    /// ``carryOut(_:answering:requestID:)`` for events that cannot stop the coordinator
    /// (serving-time events never abort nor open plan links).
    func carry(_ actions: [CoordinatorAction]) {
        do { try carryOut(actions) } catch {
            logger.error("\(error.localizedDescription)")
        }
    }

    /// Opens the link (a DEALER, routing id "coordinator") to a registered worker.
    private func connect(_ id: String) throws {
        guard let w = workers.first(where: { $0.id == id }) else { return }
        var options = ZMQSocketOptions()
        options.routingID = Array(coordinatorPeerID.utf8)
        let link = try CountedSocket(context: context, kind: .dealer, counters: counters, peerLabel: id,
                                     options: configuration.security.client(options))
        do { try link.connect(w.endpoint.description) } catch {
            link.close()
            throw error
        }
        links[id] = link
    }
}
