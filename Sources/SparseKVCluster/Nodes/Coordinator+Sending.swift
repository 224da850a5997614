import Foundation

// Sending from the coordinator: answers and replies over the ROUTER, messages to workers
// over their links, the shutdown at exit, and the small helpers they share.

extension Coordinator {
    func answer(_ received: ReceivedMessage, _ body: WireBody, requestID: UInt64, sessionID: UInt64 = 0, timeout: Duration = .seconds(2)) {
        guard let id = received.routingID else { return }
        do { try router.send(WireMessage(body, requestID: requestID, sessionID: sessionID), to: id, timeout: timeout) } catch {
            logger.warning("could not answer \(received.peer): \(error.localizedDescription)")
        }
    }

    func sendToClient(_ client: [UInt8], _ m: WireMessage) {
        do { try router.send(m, to: client, timeout: .seconds(5)) } catch {
            logger.warning("could not reach client \(WireProtocol.peerLabel(routingID: client)): \(error.localizedDescription)")
        }
    }

    func sendToWorker(_ i: Int, _ m: WireMessage) { sendToWorker(workers[i].id, m) }

    /// Over the worker's link, or the ROUTER while it has none (a worker the core just
    /// dropped is still reached over its link).
    func sendToWorker(_ id: String, _ m: WireMessage) {
        do {
            if let link = links[id] {
                try link.send(m, timeout: .seconds(30))
            } else if let w = workers.first(where: { $0.id == id }) {
                try router.send(m, to: w.routingID, timeout: .seconds(2))
            } else {
                logger.debug("not sent to \(id), no longer a worker: \(m.kind)")
            }
        } catch {
            logger.warning("could not reach \(id): \(error.localizedDescription)")
        }
    }

    /// Tells every worker to stop; a worker that does not take it within a short linger is
    /// left to notice the missing heartbeat, so the coordinator exits promptly.
    func shutDownWorkers(reason: String) {
        for i in workers.indices {
            do {
                let m = WireMessage(.shutdown(reason: reason))
                if let link = links[workers[i].id] { try link.send(m, timeout: .milliseconds(200)) } else { try router.send(m, to: workers[i].routingID, timeout: .milliseconds(200)) }
            } catch {
                logger.warning("could not tell \(workers[i].id) to shut down: \(error.localizedDescription)")
            }
        }
        for link in links.values { link.close(linger: .milliseconds(300)) }
        links = [:]
        router.close(linger: .milliseconds(300))
    }

    func takeControlID() -> UInt64 { core.takeRequestID() }

    func clip(_ s: String) -> String { CoordinatorCore.clip(s) }

    func clipText(_ s: String) -> String {
        var s = s
        while s.utf8.count > WireProtocol.maxReplyTextBytes { s.removeLast() }
        return s
    }

    func nanoseconds(_ d: Duration) -> UInt64 { CoordinatorCore.nanoseconds(d) }
}
