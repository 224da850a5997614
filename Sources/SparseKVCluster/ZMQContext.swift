import CZMQ
import Foundation

/// A libzmq context: owns the I/O threads that move bytes for all of its sockets.
///
/// Thread-safe (libzmq contexts are), hence `Sendable`. Each ``ZMQSocket`` keeps its
/// context alive, so the context is terminated only after its last socket is closed.
public final class ZMQContext: @unchecked Sendable {
    // @unchecked: the handle is used only through libzmq calls that are thread-safe on
    // contexts (zmq_socket, zmq_ctx_shutdown, zmq_ctx_term).
    let handle: UnsafeMutableRawPointer

    /// - Parameter ioThreads: libzmq I/O threads; one moves about a gigabyte per second.
    public init(ioThreads: Int = 1) throws {
        guard let h = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        handle = h
        guard zmq_ctx_set(h, ZMQ_IO_THREADS, Int32(clamping: ioThreads)) == 0 else {
            let e = ZMQError.last("zmq_ctx_set", "ZMQ_IO_THREADS=\(ioThreads)")
            zmq_ctx_term(h)
            throw e
        }
    }

    /// Makes every blocking call on this context's sockets, in any thread, return
    /// ``ZMQError/contextTerminated``: the way to stop a serving loop from outside.
    public func shutdown() {
        zmq_ctx_shutdown(handle)
    }

    deinit {
        // Blocks until every socket is closed and its linger has passed; sockets hold
        // this object, so by now they are.
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }
}
