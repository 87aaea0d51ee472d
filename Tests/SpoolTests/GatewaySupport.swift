import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import Prometheus
import ServiceLifecycle
import SpoolCore
import SpoolDemoJobs
import SpoolGateway
import SpoolSQLite
import SpoolWebhooks
import Synchronization

/// swift-metrics can be bootstrapped once per process: every gateway of the tests shares this.
let testMetrics: PrometheusCollectorRegistry = {
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusExport(registry: registry))
    return registry
}()

/// An HTTP answer, read whole.
struct HTTPAnswer {
    var status: Int
    var headers: HTTPHeaders
    var body: Data

    var json: JSONValue? { JSONValue(json: body) }
    /// A member of a JSON object body.
    subscript(_ key: String) -> JSONValue? {
        if case .object(let o)? = json { return o[key] }
        return nil
    }
    func string(_ key: String) -> String? {
        if case .string(let s)? = self[key] { return s }
        return nil
    }
    var problemType: String? {
        headers.first(name: "content-type") == "application/problem+json" ? string("type") : nil
    }
}

/// A real gateway on an ephemeral loopback port, over a fresh SQLite store, with workers.
final class TestGateway: Sendable {
    let spool: Spool
    let store: SQLiteJobStore
    let port: Int
    let dir: TempDir
    /// The gateway's event hub (to see how many streams are open).
    let events: EventHub

    private init(spool: Spool, store: SQLiteJobStore, port: Int, dir: TempDir, events: EventHub) {
        self.spool = spool; self.store = store; self.port = port; self.dir = dir; self.events = events
    }

    /// Starts a gateway, runs `body` against it, and shuts everything down.
    static func with(
        tokens: [APIToken] = [], workers: Bool = true,
        webhooks: WebhookConfiguration = WebhookConfiguration(),
        engine: (inout EngineConfiguration) -> Void = { _ in },
        gateway: (inout GatewayConfiguration) -> Void = { _ in },
        _ body: (TestGateway) async throws -> Void
    ) async throws {
        _ = testMetrics
        let dir = TempDir()
        defer { dir.remove() }
        let store = try SQLiteJobStore(path: dir.file("gateway.sqlite"))
        try await store.migrate()
        var engineConfig = fastConfiguration()
        engine(&engineConfig)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let spool = Spool(store: store, configuration: engineConfig, logger: logger)
        DemoJobs.register(on: spool)
        let deliverer = WebhookDeliverer(store: store, configuration: webhooks, logger: logger)
        defer { Task { try? await deliverer.shutdown() } }
        spool.register(deliverer.handler)
        var config = GatewayConfiguration()
        config.port = 0
        config.tokens = tokens
        config.webhooks = webhooks
        gateway(&config)
        let api = Gateway(spool: spool, configuration: config, metrics: testMetrics)
        let (portStream, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let app = try api.application(logger: logger) { port in portContinuation.yield(port) }
        var services: [any Service] = [app]
        if workers { services.append(spool.worker()) }
        // Bounded: a shutdown that hangs (seen once in CI, after a test's body had passed) is
        // cut short by cancellation instead of stalling the whole run.
        var groupConfiguration = ServiceGroupConfiguration(services: services, logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(20)
        groupConfiguration.maximumCancellationDuration = .seconds(10)
        let group = ServiceGroup(configuration: groupConfiguration)
        let running = Task { try await group.run() }
        var iterator = portStream.makeAsyncIterator()
        guard let port = await iterator.next() else { throw GatewayError("the server did not start") }
        let harness = TestGateway(spool: spool, store: store, port: port, dir: dir, events: api.events)
        do {
            try await body(harness)
        } catch {
            await group.triggerGracefulShutdown()
            _ = try? await running.value
            try? await store.close()
            throw error
        }
        await group.triggerGracefulShutdown()
        try await running.value
        try? await store.close()
    }

    /// Sends a request with a real HTTP client over loopback.
    func request(
        _ method: HTTPMethod, _ path: String, json: String? = nil, body: Data? = nil, token: String? = nil,
        contentType: String? = "application/json", headers extra: [(String, String)] = []
    ) async throws -> HTTPAnswer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in extra { request.headers.add(name: name, value: value) }
        if let data = body ?? json.map({ Data($0.utf8) }) {
            if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
            request.body = .bytes(ByteBuffer(data: data))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 16 << 20)
        return HTTPAnswer(status: Int(response.status.code), headers: response.headers, body: Data(buffer: bytes))
    }

    func post(_ path: String, _ json: String, token: String? = nil, headers: [(String, String)] = []) async throws -> HTTPAnswer {
        try await request(.POST, path, json: json, token: token, headers: headers)
    }

    func get(_ path: String, token: String? = nil) async throws -> HTTPAnswer {
        try await request(.GET, path, token: token)
    }
}
