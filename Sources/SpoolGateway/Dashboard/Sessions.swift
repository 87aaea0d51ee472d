import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import SpoolCore
import Synchronization

/// Dashboard sessions: after a browser logs in with an API token, a random session id in an
/// `HttpOnly`, `SameSite=Strict` cookie stands for that token's principal until it expires or
/// the user logs out. Requests that change anything must also carry the session's CSRF token
/// in `X-CSRF-Token` (the page reads it from `GET /v1/session`; another site cannot).
///
/// Sessions live in this process's memory: a restart, or a request that reaches another
/// gateway behind a balancer without sticky sessions, asks for the token again.
final class Sessions: Sendable {
    struct Session: Sendable {
        var principal: Principal
        var csrf: String
        var expires: Date
    }

    static let cookieName = "spool_session"
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!
    /// How long a session lasts.
    static let lifetime: TimeInterval = 12 * 3600
    /// Past this many live sessions the oldest are dropped (a login flood cannot grow memory).
    static let limit = 10_000
    /// Past this many live sessions of one token its oldest are dropped (one token's logins
    /// cannot push everyone else's sessions out).
    static let limitPerToken = 100

    private let table = Mutex<[String: Session]>([:])

    /// A new session for `principal`; returns its id (the cookie's value).
    func create(for principal: Principal) -> (id: String, session: Session) {
        let session = Session(principal: principal, csrf: Self.randomToken(), expires: Date().addingTimeInterval(Self.lifetime))
        let id = Self.randomToken()
        table.withLock { sessions in
            let now = Date()
            sessions = sessions.filter { $0.value.expires > now }
            let same = sessions.filter { $0.value.principal.name == principal.name && $0.value.principal.tenant == principal.tenant }
            if same.count >= Self.limitPerToken {
                for (old, _) in same.sorted(by: { $0.value.expires < $1.value.expires }).prefix(same.count - Self.limitPerToken + 1) {
                    sessions.removeValue(forKey: old)
                }
            }
            if sessions.count >= Self.limit {
                for (old, _) in sessions.sorted(by: { $0.value.expires < $1.value.expires }).prefix(sessions.count - Self.limit + 1) {
                    sessions.removeValue(forKey: old)
                }
            }
            sessions[id] = session
        }
        return (id, session)
    }

    /// The live session of this id, if any.
    func find(_ id: String) -> Session? {
        table.withLock { sessions in
            guard let session = sessions[id] else { return nil }
            if session.expires <= Date() {
                sessions.removeValue(forKey: id)
                return nil
            }
            return session
        }
    }

    func remove(_ id: String) { _ = table.withLock { $0.removeValue(forKey: id) } }

    /// The session named by the request's cookie.
    func find(in request: Request) -> (id: String, session: Session)? {
        guard let id = Self.cookie(in: request), let session = find(id) else { return nil }
        return (id, session)
    }

    /// The session cookie's value; `nil` when there is none or more than one (a cookie planted
    /// for the parent domain or another path by a neighbouring site must not choose the session).
    static func cookie(in request: Request) -> String? {
        var found: [String] = []
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if parts.count == 2, parts[0] == cookieName, !parts[1].isEmpty { found.append(parts[1]) }
            }
        }
        return Set(found).count == 1 ? found[0] : nil  // (a proxy may repeat the same cookie)
    }

    /// The `Set-Cookie` value: the session, or (`id` nil) one that clears it.
    static func setCookie(_ id: String?, secure: Bool) -> String {
        var parts = ["\(cookieName)=\(id ?? "")", "Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=\(id == nil ? 0 : Int(lifetime))"]
        if secure { parts.append("Secure") }
        return parts.joined(separator: "; ")
    }

    /// 256 random bits, URL-safe.
    static func randomToken() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// Whether the CSRF header matches, compared in constant time.
    static func csrfMatches(_ request: Request, _ session: Session) -> Bool {
        guard let sent = request.headers[csrfHeader] else { return false }
        let a = Array(sent.utf8), b = Array(session.csrf.utf8)
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}
