import Crypto
import Foundation
import Hummingbird
import HummingbirdWebSocket
import SpoolCore

/// What a token may do.
public enum Scope: String, Sendable, CaseIterable, Codable {
    /// Enqueue jobs, and cancel, retry or delete the tenant's own jobs.
    case enqueue
    /// Read the tenant's jobs and queues.
    case read
    /// Lease and report jobs over HTTP (workers in other languages).
    case worker
    /// Everything, for every tenant: queue control, dead-letter redrive, purge.
    case admin
}

/// An API token as the gateway keeps it: only the SHA-256 of the secret, never the secret.
public struct APIToken: Sendable {
    public var name: String
    public var tenant: String
    public var scopes: Set<Scope>
    /// SHA-256 of the token, 32 bytes.
    public var hash: [UInt8]

    public init(name: String, tenant: String, scopes: Set<Scope>, hash: [UInt8]) {
        self.name = name; self.tenant = tenant; self.scopes = scopes; self.hash = hash
    }

    /// Builds an entry from the secret itself (hashed at once, the secret is not kept).
    public init(name: String, tenant: String, scopes: Set<Scope>, secret: String) {
        self.init(name: name, tenant: tenant, scopes: scopes, hash: APIToken.hash(secret))
    }

    public static func hash(_ secret: String) -> [UInt8] { Array(SHA256.hash(data: Data(secret.utf8))) }

    /// Parses a hex SHA-256 (64 characters).
    public static func parseHex(_ hex: String) -> [UInt8]? {
        guard hex.utf8.count == 64 else { return nil }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }

    /// A new random token: `spool_` and 43 URL-safe characters (256 bits).
    public static func generateSecret() -> String {
        let key = SymmetricKey(size: .bits256)
        let raw = key.withUnsafeBytes { Data($0) }.base64EncodedString()
        return "spool_" + raw.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

/// Who is calling: the tenant they act for and what they may do.
public struct Principal: Sendable {
    public var name: String
    public var tenant: String
    public var scopes: Set<Scope>

    /// The caller when the gateway runs without tokens (loopback only).
    static let local = Principal(name: "local", tenant: NewJob.defaultTenant, scopes: Set(Scope.allCases))

    public var isAdmin: Bool { scopes.contains(.admin) }
    /// The tenant filter for reads and changes: `nil` (every tenant) for admins.
    var tenantFilter: String? { isAdmin ? nil : tenant }
}

/// The request context of the gateway: the core storage plus the authenticated caller.
public struct SpoolRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public var principal: Principal?
    /// Set by the `/v1/ws` route when the request upgrades to a WebSocket.
    public let webSocket: WebSocketHandlerReference<Self>

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        principal = nil
        webSocket = .init()
    }

    /// The caller, who must hold `scope` (or `admin`).
    func require(_ scope: Scope) throws -> Principal {
        guard let principal else { throw Problem.unauthorized }
        guard principal.scopes.contains(scope) || principal.isAdmin else { throw Problem.forbidden(scope) }
        return principal
    }
}

/// Checks `Authorization: Bearer <token>` against the configured tokens. With no tokens
/// configured every caller is the local admin (the gateway refuses to start that way unless it
/// listens on loopback only).
///
/// WebSocket upgrades (`webSocket: true`) also take the token where a browser can put it: in
/// the subprotocol list (`Sec-WebSocket-Protocol: spool.v1, spool.bearer.<token>`), or as the
/// `access_token` query parameter (which may end up in proxy logs: prefer the subprotocol).
struct AuthMiddleware: RouterMiddleware {
    typealias Context = SpoolRequestContext
    let tokens: [APIToken]
    /// The dashboard's sessions: a session cookie stands for the token it was made from.
    var sessions: Sessions?
    var webSocket = false

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        if tokens.isEmpty {
            context.principal = .local
        } else if let secret = presentedSecret(request) {
            if let token = Self.find(APIToken.hash(secret), in: tokens) {
                context.principal = Principal(name: token.name, tenant: token.tenant, scopes: token.scopes)
            } else if !webSocket {
                throw Problem.unauthorized
            }
        } else if let (_, session) = sessions?.find(in: request) {
            // A browser sends the cookie with any request to this site: a change needs the
            // session's CSRF token too, which only the dashboard's own page can read.
            let safe = request.method == .get || request.method == .head || request.method == .options
            guard safe || Sessions.csrfMatches(request, session) else {
                throw Problem(.forbidden, type: "csrf", title: "CSRF token missing or wrong",
                              detail: "requests made with a session cookie that change anything need the session's X-CSRF-Token header")
            }
            context.principal = session.principal
        } else if !webSocket {
            throw Problem.unauthorized
        }
        // A WebSocket without a valid token goes on without a principal: the library can only
        // answer a refused handshake with a bare 400, so the session refuses it after the
        // handshake instead, with a close code that says why (WebSocketSession.serve).
        return try await next(request, context)
    }

    private func presentedSecret(_ request: Request) -> String? {
        if let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") {
            return header.dropFirst("bearer ".count).trimmingCharacters(in: .whitespaces)
        }
        guard webSocket else { return nil }
        let offered = request.headers[values: .secWebSocketProtocol].flatMap { $0.split(separator: ",") }
        if let entry = offered.map({ $0.trimmingCharacters(in: .whitespaces) }).first(where: { $0.hasPrefix(WebSocketSession.bearerPrefix) }) {
            return String(entry.dropFirst(WebSocketSession.bearerPrefix.count))
        }
        return request.uri.queryParameters["access_token"].map(String.init)
    }

    /// Compares against every token in constant time, so timing tells nothing about which
    /// bytes matched.
    static func find(_ hash: [UInt8], in tokens: [APIToken]) -> APIToken? {
        var found: APIToken?
        for token in tokens {
            var difference: UInt8 = 0
            for (a, b) in zip(token.hash, hash) { difference |= a ^ b }
            if difference == 0 && token.hash.count == hash.count { found = token }
        }
        return found
    }
}
