import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which addresses a callback URL may reach.
///
/// By default only public addresses: a callback URL is chosen by whoever enqueues the job, and
/// without this check the webhook sender would be a way into the private network it runs in
/// (SSRF). Literal addresses are checked when the job is enqueued; host names are resolved and
/// checked again before every delivery attempt, which then connects to the address checked
/// (the HTTP client does not resolve the name again, so DNS rebinding cannot swap it).
public struct CallbackAddressPolicy: Sendable, Hashable {
    /// Allow 127.0.0.0/8, ::1 and `localhost` (tests, and a receiver on the same machine).
    public var allowLoopback: Bool
    /// Allow private, link-local, shared (CGNAT) and unique-local ranges.
    public var allowPrivateNetworks: Bool

    public init(allowLoopback: Bool = false, allowPrivateNetworks: Bool = false) {
        self.allowLoopback = allowLoopback
        self.allowPrivateNetworks = allowPrivateNetworks
    }

    /// Why an address is refused, or `nil` when it may be called.
    public func refusal(for address: IPAddress) -> String? {
        switch address.scope {
        case .public: return nil
        case .loopback: return allowLoopback ? nil : "\(address) is a loopback address"
        case .privateNetwork: return allowPrivateNetworks ? nil : "\(address) is a private or link-local address"
        case .unusable: return "\(address) is not a routable address"
        }
    }

    /// Checks a URL without resolving it: refuses literal addresses (and `localhost`) the
    /// policy does not allow. Host names are checked when delivered (``resolve(_:)``).
    public func checkLiteral(_ urlString: String) -> String? {
        guard let url = URL(string: urlString), let host = url.host?.trimmingCharacters(in: CharacterSet(charactersIn: "[]")) else {
            return "not a URL"
        }
        let lower = host.lowercased().hasSuffix(".") ? String(host.lowercased().dropLast()) : host.lowercased()
        if lower == "localhost" || lower.hasSuffix(".localhost") {
            return allowLoopback ? nil : "\(host) is a loopback address"
        }
        return IPAddress(host).flatMap(refusal(for:))
    }

    /// ``resolve(_:using:)`` on a Dispatch thread: `getaddrinfo` (or whatever `lookup` does)
    /// blocks, and must not hold up one of the few threads Swift concurrency runs on.
    public func resolveOffThread(
        _ host: String, using lookup: @escaping @Sendable (String) throws -> [IPAddress] = { try IPAddress.lookup($0) }
    ) async throws -> [IPAddress] {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try self.resolve(host, using: lookup) })
            }
        }
    }

    /// Resolves `host` with `lookup` (the system resolver unless told) and checks every
    /// address it resolves to (``check(_:answers:)``). A literal address is checked and
    /// returned without a lookup. The addresses come back in the order `lookup` gave them;
    /// connect to one of these, not to what a second lookup answers (DNS rebinding).
    public func resolve(_ host: String, using lookup: (String) throws -> [IPAddress] = IPAddress.lookup) throws -> [IPAddress] {
        if let literal = checkLiteral("http://\(host.contains(":") ? "[\(host)]" : host)/") { throw CallbackRefused(literal) }
        if let ip = IPAddress(host) { return [ip] }
        return try check(host, answers: lookup(host))
    }

    /// Checks what a lookup of `host` answered: any refused address refuses the host (so that
    /// a name cannot mix a public and a private answer), and so does an empty answer.
    public func check(_ host: String, answers: [IPAddress]) throws -> [IPAddress] {
        guard !answers.isEmpty else { throw CallbackRefused("\(host) does not resolve") }
        for address in answers {
            if let why = refusal(for: address) { throw CallbackRefused("\(host) refused: \(why)") }
        }
        return answers
    }
}

/// A callback URL the policy does not allow.
public struct CallbackRefused: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// An IPv4 or IPv6 address, classified by what it can reach.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6.
    public let bytes: [UInt8]

    public enum Scope: Sendable { case `public`, loopback, privateNetwork, unusable }

    /// Parses an address as the resolver would: IPv4 also in its short, decimal, octal and
    /// hex forms (`127.1`, `2130706433`, `0x7f.1`), so that none of them slips past a check.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_aton(text, &v4) != 0 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return
        }
        return nil
    }

    init(bytes: [UInt8]) { self.bytes = bytes }

    public var description: String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        return stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
    }

    public var scope: Scope {
        if bytes.count == 4 { return Self.scopeV4(bytes) }
        // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible addresses are their IPv4 address.
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff { return Self.scopeV4(Array(bytes[12...])) }
        if bytes[0..<15].allSatisfy({ $0 == 0 }) { return bytes[15] == 1 ? .loopback : .unusable }  // ::1, ::
        if bytes[0..<12].allSatisfy({ $0 == 0 }) { return Self.scopeV4(Array(bytes[12...])) }  // ::a.b.c.d (IPv4-compatible)
        if bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80 { return .privateNetwork }  // fe80::/10 link-local
        if bytes[0] & 0xfe == 0xfc { return .privateNetwork }  // fc00::/7 unique local
        if bytes[0] == 0xff { return .unusable }  // multicast
        if bytes[0] == 0x00 && bytes[1] == 0x64 && bytes[2] == 0xff && bytes[3] == 0x9b { return Self.scopeV4(Array(bytes[12...])) }  // NAT64
        return .public
    }

    private static func scopeV4(_ b: [UInt8]) -> Scope {
        switch (b[0], b[1]) {
        case (127, _): return .loopback
        case (0, _), (224...255, _): return .unusable
        case (10, _), (172, 16...31), (192, 168), (169, 254), (100, 64...127), (198, 18...19): return .privateNetwork
        case (192, 0) where b[2] == 0: return .privateNetwork
        default: return .public
        }
    }

    /// Every address `host` resolves to, as the system resolver (`getaddrinfo`) answers it:
    /// in its order of preference, without repeats. Blocks.
    public static func lookup(_ host: String) throws -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &result)
        guard status == 0, let first = result else {
            throw CallbackRefused("\(host) does not resolve (\(String(cString: gai_strerror(status))))")
        }
        defer { freeaddrinfo(first) }
        var addresses: [IPAddress] = []
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let info = next {
            if let sockaddr = info.pointee.ai_addr {
                if info.pointee.ai_family == AF_INET {
                    sockaddr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                        var addr = sin.pointee.sin_addr
                        addresses.append(IPAddress(bytes: withUnsafeBytes(of: &addr) { Array($0) }))
                    }
                } else if info.pointee.ai_family == AF_INET6 {
                    sockaddr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                        var addr = sin6.pointee.sin6_addr
                        addresses.append(IPAddress(bytes: withUnsafeBytes(of: &addr) { Array($0) }))
                    }
                }
            }
            next = info.pointee.ai_next
        }
        var seen = Set<IPAddress>()
        return addresses.filter { seen.insert($0).inserted }
    }
}
