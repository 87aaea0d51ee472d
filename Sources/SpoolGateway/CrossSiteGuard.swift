import Foundation
import HTTPTypes
import Hummingbird

/// Refuses requests a web page made on someone else's behalf.
///
/// A browser sends body-less POSTs and DELETEs (and WebSocket upgrades) to any address
/// without asking the server first, so without this a page the operator visits could purge a
/// token-less local gateway's queues. Refused with 403 `cross-site`:
/// - an `Origin` that is not the gateway's own (`Origin` names another host or port), or
///   `Origin: null` (sandboxed frames, `file:` pages, redirects);
/// - `Sec-Fetch-Site: cross-site` or `same-site` (another site, or a sibling subdomain);
/// - without tokens, a `Host` that is not a loopback name or address: a page on a name that
///   was rebound to 127.0.0.1 (DNS rebinding) still sends its own name as `Host`.
///
/// Clients that are not browsers send none of these headers and are not affected.
struct CrossSiteGuard: RouterMiddleware {
    typealias Context = SpoolRequestContext
    /// Whether the gateway runs without tokens (every caller is the local admin).
    let tokenless: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let reason = refusal(request) {
            throw Problem(.forbidden, type: "cross-site", title: "Cross-site request refused", detail: reason)
        }
        return try await next(request, context)
    }

    /// Why the request is refused, or `nil`.
    func refusal(_ request: Request) -> String? {
        let authority = (request.head.authority ?? "").lowercased()
        if tokenless, !authority.isEmpty, !Self.isLoopback(authority: authority) {
            return "Host '\(authority.prefix(100))' is not a loopback name or address; a gateway without API tokens answers only requests addressed to 127.0.0.1, ::1 or localhost"
        }
        if let site = request.headers[.secFetchSite]?.lowercased(), site == "cross-site" || site == "same-site" {
            return "Sec-Fetch-Site: \(site): requests from other sites are refused"
        }
        for origin in request.headers[values: .origin] {
            let value = origin.trimmingCharacters(in: .whitespaces).lowercased()
            guard let url = URL(string: value), let scheme = url.scheme, let host = url.host, value != "null" else {
                return "Origin '\(origin.prefix(100))' is not the gateway's own"
            }
            let port = url.port.map { ":\($0)" } ?? ""
            let originAuthority = (host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host) + port
            let defaultPort = scheme == "https" || scheme == "wss" ? ":443" : ":80"
            let sameAuthority = originAuthority == authority || originAuthority + defaultPort == authority || originAuthority == authority + defaultPort
            // Browsers send the page's origin (http or https, with its port). WebSocket client
            // libraries send `ws://host` without the port: no page can send that.
            let sameHost = (scheme == "ws" || scheme == "wss") && url.port == nil
                && (authority == originAuthority || authority.hasPrefix(originAuthority + ":"))
            if !sameAuthority && !sameHost {
                return "Origin '\(origin.prefix(100))' is not the gateway's own (\(authority))"
            }
        }
        return nil
    }

    /// Whether `authority` (`host[:port]`) names this machine: `localhost`, 127.0.0.0/8 or ::1.
    static func isLoopback(authority: String) -> Bool {
        var host = Substring(authority)
        if host.hasPrefix("[") {
            guard let end = host.firstIndex(of: "]") else { return false }
            host = host[host.index(after: host.startIndex)..<end]
            return host == "::1" || host == "0:0:0:0:0:0:0:1"
        }
        if let colon = host.lastIndex(of: ":") { host = host[..<colon] }
        if host.hasSuffix(".") { host = host.dropLast() }
        if host == "localhost" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}

extension HTTPField.Name {
    static let secFetchSite = Self("Sec-Fetch-Site")!
}
