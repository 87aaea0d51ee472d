import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import SpoolCore
import SpoolKinds

/// The service-kind part of `spool bench`: a trivial downstream service on a loopback port
/// (answers `200 {}`), and a kind declared like one of `spool.yaml`'s `kinds` calling it.
enum ServiceKindBench {
    /// Runs `body` with the service up; passes its URL.
    static func withService<T: Sendable>(_ body: (String) async throws -> T) async throws -> T {
        let router = Router()
        router.post("work") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
        var logger = Logger(label: "bench-service")
        logger.logLevel = .warning
        let (ports, portFeed) = AsyncStream.makeStream(of: Int.self)
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0), backlog: 4096),
                              onServerRunning: { portFeed.yield($0.localAddress?.port ?? 0) }, logger: logger)
        let group = ServiceGroup(services: [app], logger: logger)
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CLIError("the bench service did not start") }
        do {
            let result = try await body("http://127.0.0.1:\(port)/work")
            await group.triggerGracefulShutdown()
            _ = try? await task.value
            return result
        } catch {
            await group.triggerGracefulShutdown()
            _ = try? await task.value
            throw error
        }
    }

    /// Registers `bench.noop` on `spool` as a service kind calling `url`.
    static func register(on spool: Spool, url: String, client: HTTPClientHolder) {
        let kind = HTTPServiceKind(kind: "bench.noop", url: url)
        spool.register(kind.handler(client: client.client) { _ in "whsec_" + Data(repeating: 7, count: 32).base64EncodedString() })
    }
}

/// The HTTP client of a bench run, shut down with it.
final class HTTPClientHolder: Sendable {
    let client = HTTPServiceKind.makeClient()
    func shutdown() async { try? await client.shutdown() }
}
