import Foundation
import HTTPTypes
import Hummingbird
import SpoolCore

/// The operator's dashboard: static files shipped with the binary as SwiftPM resources
/// (`DashboardFiles/`, see ``Resources``), served
/// at `/dashboard/` under a Content-Security-Policy that allows only its own script and style;
/// and `/v1/session`, where the page trades an API token for a session cookie.
struct DashboardRoutes {
    let gateway: Gateway

    /// Only the dashboard's own files; no inline script or style, no other site.
    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        + "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    /// The files, read once from the bundle: name → (bytes, content type).
    static let files: [String: (Data, String)] = {
        var files: [String: (Data, String)] = [:]
        let types = ["html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
                     "svg": "image/svg+xml", "png": "image/png", "txt": "text/plain; charset=utf-8"]
        guard let folder = Resources.bundle?.url(forResource: "DashboardFiles", withExtension: nil),
              let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { return files }
        for name in names {
            guard let type = types[(name as NSString).pathExtension], let data = try? Data(contentsOf: folder.appendingPathComponent(name)) else { continue }
            files[name] = (data, type)
        }
        return files
    }()

    func registerFiles(on router: Router<SpoolRequestContext>) {
        router.get("/") { _, _ in Response(status: .found, headers: [.location: "/dashboard/"]) }
        // (`/dashboard` and `/dashboard/` are one route; the page names its files by absolute path.)
        router.get("dashboard") { _, _ in try Self.file("index.html") }
        router.get("dashboard/:file") { _, context in try Self.file(context.parameters.get("file") ?? "") }
    }

    static func file(_ name: String) throws -> Response {
        guard !files.isEmpty else { throw Problem(.serviceUnavailable, type: "unavailable", title: "The dashboard is not installed", detail: Resources.missing) }
        guard let (data, type) = files[name] else { throw Problem.notFound("no such dashboard file") }
        return Response(status: .ok, headers: [
            .contentType: type, .cacheControl: "no-cache", .contentSecurityPolicy: contentSecurityPolicy,
            .xContentTypeOptions: "nosniff", .referrerPolicy: "no-referrer", .xFrameOptions: "DENY",
        ], body: .init(byteBuffer: ByteBuffer(data: data)))
    }

    // MARK: Sessions

    struct SessionDocument: Encodable {
        /// `none` (no tokens configured: every local caller is admin), `session` or `token`.
        var auth: String
        var name: String
        var tenant: String
        var scopes: [String]
        var csrf_token: String?
        var expires_at: String?

        init(auth: String, principal: Principal, session: Sessions.Session? = nil) {
            self.auth = auth
            name = principal.name
            tenant = principal.tenant
            scopes = principal.scopes.map(\.rawValue).sorted()
            csrf_token = session?.csrf
            expires_at = session.map { Timestamp.format($0.expires) }
        }
    }

    func registerSession(on v1: RouterGroup<SpoolRequestContext>) {
        let sessions = gateway.sessions, tokens = gateway.configuration.tokens
        v1.get("session") { request, _ in
            if tokens.isEmpty { return try JSONResponse.make(SessionDocument(auth: "none", principal: .local)) }
            if let (_, session) = sessions.find(in: request) {
                return try JSONResponse.make(SessionDocument(auth: "session", principal: session.principal, session: session))
            }
            throw Problem.unauthorized
        }
        v1.post("session") { request, _ in
            if tokens.isEmpty { return try JSONResponse.make(SessionDocument(auth: "none", principal: .local)) }
            struct Login: Decodable { var token: String }
            let login = try await request.decodeJSON(Login.self, limit: 4096)
            guard let token = AuthMiddleware.find(APIToken.hash(login.token), in: tokens) else { throw Problem.unauthorized }
            let (id, session) = sessions.create(for: Principal(name: token.name, tenant: token.tenant, scopes: token.scopes))
            return try JSONResponse.make(SessionDocument(auth: "session", principal: session.principal, session: session),
                                         headers: [.setCookie: Sessions.setCookie(id, secure: secure(request))])
        }
        v1.delete("session") { request, _ in
            if let (id, session) = sessions.find(in: request) {
                guard Sessions.csrfMatches(request, session) else {
                    throw Problem(.forbidden, type: "csrf", title: "CSRF token missing or wrong", detail: "logging out needs the session's X-CSRF-Token header")
                }
                sessions.remove(id)
            }
            return Response(status: .noContent, headers: [.setCookie: Sessions.setCookie(nil, secure: secure(request))])
        }
    }

    /// A cookie marked `Secure` when the page was served over TLS (by a proxy in front).
    private func secure(_ request: Request) -> Bool {
        gateway.configuration.secureCookies || request.headers[.xForwardedProto]?.lowercased() == "https"
    }
}

extension HTTPField.Name {
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
    static let referrerPolicy = Self("Referrer-Policy")!
    static let xFrameOptions = Self("X-Frame-Options")!
    static let xForwardedProto = Self("X-Forwarded-Proto")!
}
