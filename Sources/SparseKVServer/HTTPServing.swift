import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// Runs the HTTP API and the services behind it in one service group, until SIGTERM or
/// SIGINT: then the HTTP server stops taking connections and lets requests in flight
/// finish, then the services behind it stop (in reverse order of `services`).
public enum HTTPServing {
    /// - Parameter onListening: called with `http://HOST:PORT` once the socket is bound
    ///   (with the port chosen when `port` is 0).
    public static func run(api: APIServer, host: String, port: Int, services: [any Service], logger: Logger,
                           onListening: @escaping @Sendable (String) -> Void) async throws {
        try await run(router: api.router(), serverName: "sparsekv", host: host, port: port, services: services,
                      logger: logger, onListening: onListening)
    }

    /// Runs `router` on `host:port` with `services` behind it (see ``run(api:host:port:services:logger:onListening:)``).
    static func run(router: Router<BasicRequestContext>, serverName: String, host: String, port: Int, services: [any Service],
                    logger: Logger, onListening: @escaping @Sendable (String) -> Void) async throws {
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: serverName),
            onServerRunning: { channel in
                onListening("http://\(host):\(channel.localAddress?.port ?? port)")
            },
            logger: logger)
        // A service behind the API that ends on its own (a drained worker, a coordinator told
        // to shut down) ends the process cleanly: the HTTP server finishes its requests, exit 0.
        let behind = services.map {
            ServiceGroupConfiguration.ServiceConfiguration(service: $0, successTerminationBehavior: .gracefullyShutdownGroup)
        }
        var configuration = ServiceGroupConfiguration(services: behind + [.init(service: app)], logger: logger)
        configuration.gracefulShutdownSignals = [.sigterm, .sigint]
        try await ServiceGroup(configuration: configuration).run()
    }

    /// Splits `HOST:PORT` (`:PORT` means 127.0.0.1).
    public static func parseAddress(_ s: String) throws -> (host: String, port: Int) {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port) else {
            throw ServerError.badListenAddress(s)
        }
        let host = String(s[..<colon])
        return (host.isEmpty ? "127.0.0.1" : host, port)
    }
}
