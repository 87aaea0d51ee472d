import ArgumentParser
import Foundation
import SpoolCore
import SpoolGateway

/// Options of `spool serve` for the HTTP gateway.
struct GatewayOptions: ParsableArguments {
    @Option(help: "Address to listen on. [env: SPOOL_HOST; default: 127.0.0.1]") var host: String?
    @Option(help: "Port to listen on (0 picks a free one). [env: SPOOL_PORT; default: 8080]") var port: Int?
    @Flag(help: "Serve the API only; run no workers in this process.") var noWorkers = false
    @Flag(help: "Do not serve the dashboard at /dashboard/.") var noDashboard = false

    /// The gateway settings: config file, then environment, then flags.
    func configuration(_ file: ConfigFile?) throws -> GatewayConfiguration {
        let env = ProcessInfo.processInfo.environment
        var config = GatewayConfiguration()
        let section = file?.gateway
        config.host = host ?? env["SPOOL_HOST"] ?? section?.host ?? config.host
        if let p = port ?? env["SPOOL_PORT"].flatMap(Int.init) ?? section?.port {
            guard (0...65535).contains(p) else { throw CLIError("the port must be 0-65535") }
            config.port = p
        }
        if let n = section?.max_body_bytes {
            guard n >= 1024 else { throw CLIError("gateway.max_body_bytes must be at least 1024") }
            config.maxBodyBytes = n
        }
        if let n = section?.max_batch_jobs {
            guard (1...100_000).contains(n) else { throw CLIError("gateway.max_batch_jobs must be 1-100000") }
            config.maxBatchJobs = n
        }
        for (index, token) in (section?.tokens ?? []).enumerated() {
            guard let hash = APIToken.parseHex(token.sha256.lowercased()) else {
                throw CLIError("gateway.tokens[\(index)].sha256 must be 64 hex characters (see `spool token new`)")
            }
            config.tokens.append(APIToken(name: token.name ?? "token-\(index)", tenant: token.tenant ?? NewJob.defaultTenant,
                                          scopes: try scopes(token.scopes, "gateway.tokens[\(index)]"), hash: hash))
        }
        // SPOOL_TOKENS: "secret:tenant:scope+scope,..." (hashed here; the secrets are not kept).
        for (index, entry) in (env["SPOOL_TOKENS"] ?? "").split(separator: ",").enumerated() {
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3, !parts[0].isEmpty else { throw CLIError("SPOOL_TOKENS entry \(index + 1) must be secret:tenant:scope+scope") }
            config.tokens.append(APIToken(name: "env-\(index + 1)", tenant: parts[1].isEmpty ? NewJob.defaultTenant : parts[1],
                                          scopes: try scopes(parts[2].split(separator: "+").map(String.init), "SPOOL_TOKENS entry \(index + 1)"),
                                          secret: parts[0]))
        }
        config.dashboard = !noDashboard
        config.secureCookies = section?.public_url?.lowercased().hasPrefix("https:") == true
        return config
    }

    private func scopes(_ names: [String], _ place: String) throws -> Set<Scope> {
        try Set(names.map { name in
            guard let scope = Scope(rawValue: name) else {
                throw CLIError("\(place): unknown scope '\(name)' (enqueue, read, worker, admin)")
            }
            return scope
        })
    }
}

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make API tokens.", subcommands: [New.self])

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a new random token and the config entry that accepts it.")
        @Option(help: "Tenant the token acts for.") var tenant = NewJob.defaultTenant
        @Option(help: "Scopes, comma-separated: enqueue, read, worker, admin.") var scopes = "enqueue,read"
        @Option(help: "A name for logs.") var name = "client"
        @Flag(help: "Print JSON: {token, name, tenant, scopes, sha256} (the config entry is the object without token).") var json = false

        func run() throws {
            let list = scopes.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            for scope in list where Scope(rawValue: scope) == nil { throw ValidationError("unknown scope '\(scope)'") }
            let secret = APIToken.generateSecret()
            let hash = APIToken.hash(secret).map { String(format: "%02x", $0) }.joined()
            if json {
                struct Made: Encodable { var token: String; var name: String; var tenant: String; var scopes: [String]; var sha256: String }
                return try printJSON(Made(token: secret, name: name, tenant: tenant, scopes: list, sha256: hash))
            }
            print("""
                token (give it to the client; it is not stored anywhere):
                  \(secret)

                config entry (spool.yaml):
                gateway:
                  tokens:
                    - name: \(name)
                      tenant: \(tenant)
                      scopes: [\(list.joined(separator: ", "))]
                      sha256: \(hash)
                """)
        }
    }
}
