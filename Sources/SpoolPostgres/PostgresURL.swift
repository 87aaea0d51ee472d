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
