import Foundation
import Hummingbird
import Logging
import HummingbirdWebSocket
import Prometheus
import SpoolCore
import SpoolWebhooks

/// Settings of the HTTP gateway.
public struct GatewayConfiguration: Sendable {
    /// Address to listen on. Without tokens only a loopback address is allowed.
    public var host = "127.0.0.1"
    public var port = 8080
    /// The largest request body accepted (413 past it).
    public var maxBodyBytes = 1 << 20
    /// The most jobs in one `POST /v1/jobs/batch`.
    public var maxBatchJobs = 1000
    /// API tokens; empty means no authentication (loopback only).
    public var tokens: [APIToken] = []
    /// How often an idle event stream gets a keep-alive comment.
    public var keepAlive: Duration = .seconds(15)
    /// How many events a stream may fall behind before it is closed (the client resumes).
    public var eventBuffer = 1000
    /// Webhook settings: which callback addresses are allowed, and configured secrets.
    public var webhooks = WebhookConfiguration()
    /// Serve the dashboard at `/dashboard/` (and redirect `/` there).
    public var dashboard = true
    /// Mark the session cookie `Secure` (the gateway is reached over TLS through a proxy).
    public var secureCookies = false

    public init() {}

    /// Whether `host` is a loopback address.
    public var isLoopback: Bool {
        host == "127.0.0.1" || host == "::1" || host == "localhost" || host.hasPrefix("127.")
    }

    /// Refuses to run without tokens on an address other machines can reach.
    public func validate() throws {
        if tokens.isEmpty && !isLoopback {
            throw GatewayError("refusing to listen on \(host) without API tokens: anyone who can reach it could enqueue and read jobs. "
                + "Configure tokens (gateway.tokens in the config file, or SPOOL_TOKENS), or bind to 127.0.0.1")
        }
    }
}

public struct GatewayError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The HTTP API over a ``Spool`` engine.
public struct Gateway: Sendable {
    public let spool: Spool
    public let configuration: GatewayConfiguration
    /// Where `/metrics` reads from; the process bootstraps swift-metrics with it.
    public let metrics: PrometheusCollectorRegistry
    /// Job events for the streams.
    public let events: EventHub
    /// What this gateway last wrote to the registry about each remote worker.
    let remoteWorkers = RemoteWorkers()
    /// The dashboard's login sessions.
    let sessions = Sessions()
    /// Jobs leased to remote workers through this gateway, for the queue statistics.
    let remoteLeases = RemoteLeases()

    public init(spool: Spool, configuration: GatewayConfiguration, metrics: PrometheusCollectorRegistry) {
        self.spool = spool
        self.configuration = configuration
        self.metrics = metrics
        self.events = EventHub(store: spool.store)
    }

    /// Every route as `METHOD /path` with `{name}` parameters, as the OpenAPI document lists them.
    public static let routes: [String] = [
        "GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/openapi.json",
        "POST /v1/jobs", "POST /v1/jobs/batch", "GET /v1/jobs", "GET /v1/jobs/{id}",
        "POST /v1/jobs/{id}/cancel", "POST /v1/jobs/{id}/retry", "DELETE /v1/jobs/{id}",
        "GET /v1/jobs/{id}/events", "GET /v1/events", "GET /v1/events/summary", "GET /v1/ws",
        "GET /v1/jobs/{id}/deliveries", "GET /v1/webhooks/secret",
        "GET /v1/queues", "GET /v1/queues/{name}", "POST /v1/queues/{name}/pause",
        "POST /v1/queues/{name}/resume", "POST /v1/queues/{name}/retry-failed", "POST /v1/queues/{name}/purge", "GET /v1/kinds",
        "POST /v1/worker/lease", "POST /v1/worker/heartbeat", "POST /v1/worker/complete", "POST /v1/worker/fail",
        "POST /v1/worker/jobs/{id}/complete", "POST /v1/worker/jobs/{id}/fail", "POST /v1/worker/jobs/{id}/progress",
        "POST /v1/worker/jobs/{id}/release", "GET /v1/workers",
        "POST /v1/service/jobs/{id}/complete", "POST /v1/service/jobs/{id}/fail", "POST /v1/service/jobs/{id}/progress",
        "GET /v1/session", "POST /v1/session", "DELETE /v1/session", "GET /v1/stats",
        "POST /v1/batches", "GET /v1/batches/{id}", "GET /v1/batches/{id}/jobs", "POST /v1/batches/{id}/jobs",
        "POST /v1/batches/{id}/close", "POST /v1/batches/{id}/cancel",
        "GET /v1/topics", "GET /v1/topics/{topic}/events", "POST /v1/topics/{topic}/events",
        "PUT /v1/topics/{topic}/subscriptions/{name}", "DELETE /v1/topics/{topic}/subscriptions/{name}",
        "POST /v1/topics/{topic}/subscriptions/{name}/replay",
    ]

    /// The methods `path` answers to (empty for a path no route has). Like the router, a
    /// literal segment wins over a parameter: `/v1/jobs/batch` is not `/v1/jobs/{id}`.
    static func methods(allowedOn path: String) -> [String] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        var best: (literals: Int, methods: [String]) = (-1, [])
        for route in routes {
            let parts = route.split(separator: " ")
            let pattern = parts[1].split(separator: "/", omittingEmptySubsequences: false).dropFirst()
            guard pattern.count == segments.count,
                  zip(pattern, segments).allSatisfy({ p, s in p == s || (p.hasPrefix("{") && !s.isEmpty) }) else { continue }
            let literals = pattern.filter { !$0.hasPrefix("{") }.count
            if literals > best.literals { best = (literals, []) }
            if literals == best.literals { best.methods.append(String(parts[0])) }
        }
        return best.methods
    }

    /// The router with every route and middleware.
    public func router() -> Router<SpoolRequestContext> {
        let router = Router(context: SpoolRequestContext.self)
        // Metrics outermost, so that they count the status of the problem an error became.
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: CrossSiteGuard(tokenless: configuration.tokens.isEmpty))
        OpsRoutes(gateway: self).register(on: router)
        if configuration.dashboard { DashboardRoutes(gateway: self).registerFiles(on: router) }
        let v1 = router.group("v1")
        v1.get("openapi.json") { _, _ in try OpsRoutes.openAPIResponse() }
        WorkerRoutes(gateway: self).registerServiceCallbacks(on: v1)
        DashboardRoutes(gateway: self).registerSession(on: v1)
        let api = v1.group().add(middleware: AuthMiddleware(tokens: configuration.tokens, sessions: sessions))
        JobRoutes(gateway: self).register(on: api)
        QueueRoutes(gateway: self).register(on: api)
        KindRoutes(gateway: self).register(on: api)
        StatsRoutes(gateway: self).register(on: api)
        EventRoutes(gateway: self).register(on: api)
        EventSummaryRoutes(gateway: self).register(on: api)
        WebhookRoutes(gateway: self).register(on: api)
        WorkerRoutes(gateway: self).register(on: api)
        WorkerRegistryRoutes(gateway: self).register(on: api)
        BatchRoutes(gateway: self).register(on: api)
        TopicRoutes(gateway: self).register(on: api)
        // Plain HTTP GETs of /v1/ws (no upgrade) get a problem rather than a silent 404.
        api.get("ws") { _, context -> Response in
            _ = try context.require(.read)
            throw Problem(.upgradeRequired, type: "upgrade-required", title: "WebSocket upgrade required",
                          detail: "GET /v1/ws is a WebSocket endpoint; connect with a WebSocket client",
                          headers: [.upgrade: "websocket", .connection: "Upgrade"])
        }
        return router
    }

    /// The router for WebSocket upgrades: only `/v1/ws`, behind the same authentication.
    public func webSocketRouter() -> Router<SpoolRequestContext> {
        let router = Router(context: SpoolRequestContext.self)
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: CrossSiteGuard(tokenless: configuration.tokens.isEmpty))
        router.group("v1").add(middleware: AuthMiddleware(tokens: configuration.tokens, sessions: sessions, webSocket: true))
            .ws("ws", shouldUpgrade: WebSocketSession.shouldUpgrade, onUpgrade: { inbound, outbound, context in
                try await WebSocketSession.serve(gateway: self, context: context.requestContext, inbound: inbound, outbound: outbound)
            })
        return router
    }

    /// The Hummingbird application serving the API; run it as a service.
    public func application(logger: Logger, onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        try configuration.validate()
        spool.store.startBackgroundDuties()  // events and wake-ups from every process
        if configuration.tokens.isEmpty {
            logger.warning("no API tokens configured: the API is open to every local process (listening on \(configuration.host) only)")
        }
        return Application(
            router: router(),
            server: .http1WebSocketUpgrade(webSocketRouter: webSocketRouter()),
            // A deep accept queue: after a restart every SSE/WebSocket client reconnects at once.
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "spool", backlog: 4096),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    /// Kinds a queue accepts, or `nil` for any (the engine's ``JobAdmission`` rules).
    func acceptedKinds(queue: String) -> Set<String>? { spool.acceptedKinds(queue: queue) }

    /// Queues this gateway accepts jobs for: the configured ones and `default`.
    func knowsQueue(_ name: String) -> Bool { spool.knowsQueue(name) }
}

/// Turns every error a route throws into a problem document.
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = SpoolRequestContext
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            // A path that exists with other methods: 405 and what it allows.
            let allowed = Gateway.methods(allowedOn: request.uri.path)
            guard !allowed.isEmpty else { throw Problem.wrap(error) }
            throw Problem(.methodNotAllowed, type: "method-not-allowed", title: "Method not allowed",
                          detail: "\(request.method.rawValue) is not allowed on \(request.uri.path.prefix(200)); allowed: \(allowed.joined(separator: ", "))",
                          headers: [.allow: allowed.joined(separator: ", ")])
        } catch {
            let wrapped = Problem.wrap(error)
            if let problem = wrapped as? Problem, problem.status == .internalServerError {
                context.logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            }
            throw wrapped
        }
    }
}

/// JSON responses.
enum JSONResponse {
    static func make<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) throws -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: try encoder.encode(value))))
    }
}

extension Request {
    /// The body decoded as `T`, with the checks of ``jsonBody(limit:)``; a field of the wrong
    /// type or a missing one is a 422 naming it.
    func decodeJSON<T: Decodable>(_ type: T.Type, limit: Int) async throws -> T {
        let buffer = try await jsonBytes(limit: limit)
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: buffer))
        } catch DecodingError.keyNotFound(let key, let context) {
            throw Problem.validation(Self.path(context.codingPath + [key]), "is required")
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            throw Problem.validation(Self.path(context.codingPath), "has the wrong type")
        } catch DecodingError.dataCorrupted(let context) where !context.codingPath.isEmpty {
            throw Problem.validation(Self.path(context.codingPath), "is not valid")
        } catch {
            throw Problem.malformed("the body could not be parsed as JSON (\(buffer.readableBytes) bytes)")
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: CharacterSet(charactersIn: "."))
    }

    /// The body as JSON, enforcing the content type and the size limit.
    func jsonBody(limit: Int) async throws -> JSONValue {
        let buffer = try await jsonBytes(limit: limit)
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer: buffer)) else {
            throw Problem.malformed("the body could not be parsed as JSON (\(buffer.readableBytes) bytes)")
        }
        return value
    }

    /// The raw body, if it is JSON by its content type, within `limit`, and not nested absurdly.
    private func jsonBytes(limit: Int) async throws -> ByteBuffer {
        let type = headers[.contentType]?.lowercased() ?? ""
        let mediaType = type.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard mediaType == "application/json" || mediaType.hasSuffix("+json") else { throw Problem.unsupportedMediaType }
        if let length = headers[.contentLength].flatMap({ Int($0) }), length > limit { throw Problem.tooLarge(limit) }
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: limit)
        } catch {
            throw Problem.tooLarge(limit)
        }
        guard JSONDepth.isWithin(buffer, limit: 64) else {
            throw Problem.validation("body", "JSON nested deeper than 64 levels")
        }
        return buffer
    }
}

/// Refuses absurdly nested JSON before a recursive parser sees it.
enum JSONDepth {
    static func isWithin(_ buffer: ByteBuffer, limit: Int) -> Bool {
        var depth = 0
        var inString = false
        var escaped = false
        for byte in buffer.readableBytesView {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > limit { return false }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return true
    }
}
