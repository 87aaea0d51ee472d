import Foundation
import PostgresNIO
import SpoolCore

/// `postgres://user:password@host:port/database?sslmode=disable|prefer|require`.
enum PostgresURL {
    static func isPostgres(_ url: String) -> Bool { url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") }

    static func configuration(_ url: String, maxConnections: Int) throws -> PostgresClient.Configuration {
        guard let c = URLComponents(string: url), let scheme = c.scheme, scheme == "postgres" || scheme == "postgresql",
              let host = c.host, !host.isEmpty else {
            throw SpoolError.invalid(field: "database", reason: "not a PostgreSQL URL (postgres://user:password@host:port/database)")
        }
        let database = c.path.hasPrefix("/") ? String(c.path.dropFirst()) : c.path
        let tls: PostgresClient.Configuration.TLS
        switch c.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "prefer" {
        case "disable", "allow":
            tls = .disable
        case "prefer":
            var t = TLSConfiguration.makeClientConfiguration()
            t.certificateVerification = .none
            tls = .prefer(t)
        case "require":
            var t = TLSConfiguration.makeClientConfiguration()
            t.certificateVerification = .none
            tls = .require(t)
        default:  // verify-ca, verify-full
            tls = .require(.makeClientConfiguration())
        }
        var config = PostgresClient.Configuration(
            host: host, port: c.port ?? 5432, username: c.user ?? "postgres", password: c.password,
            database: database.isEmpty ? nil : database, tls: tls)
        config.options.maximumConnections = maxConnections
        config.options.connectTimeout = .seconds(5)
        config.options.additionalStartupParameters = [("application_name", "spool")]
        return config
    }

    /// The URL with its password hidden, for logs.
    static func redacted(_ url: String) -> String {
        guard isPostgres(url) else { return url }
        guard var c = URLComponents(string: url) else { return "postgres://?" }
        if c.password != nil { c.password = "***" }
        return c.string ?? "postgres://?"
    }
}

extension PostgresJobStore {
    /// Creates an empty database on the server of `server` (named `prefix` and a random suffix),
    /// runs `body` with its URL, and drops it again whatever `body` did. For benchmarks and
    /// tests; the URL's user must be allowed to `CREATE DATABASE`.
    public static func withScratchDatabase<T>(on server: String, prefix: String, _ body: (String) async throws -> T) async throws -> T {
        guard var components = URLComponents(string: server), isPostgresURL(server) else {
            throw SpoolError.invalid(field: "database", reason: "not a PostgreSQL URL (postgres://user:password@host:port/database)")
        }
        let name = prefix + UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: "")
        components.path = "/" + name
        guard let url = components.string else { throw SpoolError.invalid(field: "database", reason: "cannot name a database on \(redacted(server))") }
        try await admin(server, "CREATE DATABASE \(name)")
        let result: Result<T, any Error>
        do { result = .success(try await body(url)) } catch { result = .failure(error) }
        do {
            try await admin(server, "DROP DATABASE \(name) WITH (FORCE)")
        } catch {
            if case .success = result { throw error }  // a body's own error matters more
        }
        return try result.get()
    }

    /// Runs one statement on `server`'s own database, on a connection of its own.
    private static func admin(_ server: String, _ sql: String) async throws {
        let store = try PostgresJobStore(url: server)
        do {
            try await store.execute(sql)
            try await store.close()
        } catch {
            try? await store.close()
            throw error
        }
    }
}
