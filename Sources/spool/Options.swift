import ArgumentParser
import Foundation
import Logging
import SpoolCore
import SpoolPostgres
import SpoolSQLite

/// Where the database is and how to open it; shared by every command.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Database: a SQLite file path, or postgres://user:password@host:port/db to share one PostgreSQL database between many processes. [env: SPOOL_DATABASE; default: ./spool.sqlite]", valueName: "path|url"))
    var database: String?

    @Option(name: .long, help: ArgumentHelp("Config file (YAML). [env: SPOOL_CONFIG; default: ./spool.yaml if present]", valueName: "file"))
    var config: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error. [env: SPOOL_LOG_LEVEL]")
    var logLevel: String?

    /// Whether a database is named anywhere: flag, `SPOOL_DATABASE` or the config file.
    func databaseNamed(_ file: ConfigFile?) -> Bool {
        database != nil || ProcessInfo.processInfo.environment["SPOOL_DATABASE"] != nil || file?.database != nil
    }

    /// Whether the command line names a database: `--database`, or `--config` with a file
    /// that names one. These win over `SPOOL_URL`, which wins over `SPOOL_DATABASE`, the
    /// database of `./spool.yaml` and the default file.
    func databaseOnCommandLine(_ file: ConfigFile?) -> Bool {
        database != nil || (config != nil && file?.database != nil)
    }

    func loadConfigFile() throws -> ConfigFile? {
        let env = ProcessInfo.processInfo.environment
        if let path = config ?? env["SPOOL_CONFIG"] {
            guard FileManager.default.fileExists(atPath: path) else { throw CLIError("config file \(path) not found") }
            return try ConfigFile.load(path: path)
        }
        return FileManager.default.fileExists(atPath: "spool.yaml") ? try ConfigFile.load(path: "spool.yaml") : nil
    }

    func databasePath(_ file: ConfigFile?) -> String {
        database ?? ProcessInfo.processInfo.environment["SPOOL_DATABASE"] ?? file?.database ?? "./spool.sqlite"
    }

    func bootstrapLogging() {
        let name = logLevel ?? ProcessInfo.processInfo.environment["SPOOL_LOG_LEVEL"] ?? "info"
        let level = Logger.Level(rawValue: name.lowercased()) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// Opens the store (running migrations) and builds the engine settings, with the config
    /// file already read. `durability` is the `--durability` flag of commands that write.
    func open(with file: ConfigFile?, durability: String? = nil, configure: (inout EngineConfiguration) throws -> Void = { _ in }) async throws -> Spool {
        var config = EngineConfiguration()
        try (file ?? ConfigFile()).apply(to: &config)
        try configure(&config)
        let path = databasePath(file)
        if PostgresJobStore.isPostgresURL(path) {
            var options = PostgresJobStore.Options()
            if let n = file?.postgres?.max_connections {
                guard (1...1000).contains(n) else { throw CLIError("postgres.max_connections must be 1-1000") }
                options.maxConnections = n
            }
            if let t = file?.postgres?.operation_timeout_seconds { options.operationTimeout = try positive(t, "postgres.operation_timeout_seconds") }
            let store = try PostgresJobStore(url: path, options: options, logger: Logger(label: "spool.postgres"))
            do {
                try await store.migrate()
            } catch {
                try? await store.close()
                throw CLIError("cannot use the PostgreSQL database: \(error)")
            }
            return Spool(store: store, configuration: config, logger: Logger(label: "spool"))
        }
        let levelName = (durability ?? file?.durability ?? "full").uppercased()
        guard let level = SQLiteJobStore.Durability(rawValue: levelName) else {
            throw CLIError("--durability must be full, normal or off")
        }
        let store = try SQLiteJobStore(path: path, durability: level)
        try await store.migrate()
        return Spool(store: store, configuration: config, logger: Logger(label: "spool"))
    }
}

/// `--durability`, for the commands that write to a SQLite file.
struct DurabilityOption: ParsableArguments {
    @Option(name: .long, help: "SQLite sync level for enqueues and completions: full (default), normal, off.")
    var durability: String?
}

/// `--url` and `--token`: work through a running gateway instead of a database file.
struct RemoteOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Talk to a running gateway instead of a database file. [env: SPOOL_URL]", valueName: "http://host:port"))
    var url: String?

    @Option(name: .long, help: "API token for --url. [env: SPOOL_TOKEN]")
    var token: String?

    var resolvedToken: String? { token ?? ProcessInfo.processInfo.environment["SPOOL_TOKEN"] }

    /// The gateway to work over HTTP: `--url`, or `SPOOL_URL` when no database is named
    /// anywhere (flag, `SPOOL_DATABASE`, config file). Checked for a scheme.
    func remoteURL(databaseNamed: Bool) throws -> String? {
        guard let url = url ?? (databaseNamed ? nil : ProcessInfo.processInfo.environment["SPOOL_URL"]) else { return nil }
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else { throw CLIError("--url must start with http:// or https://") }
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }
}

/// The options of the job and queue commands: a database file, or a gateway with `--url`.
struct StoreOptions: ParsableArguments {
    @OptionGroup var db: DatabaseOptions
    @OptionGroup var remote: RemoteOptions

    /// The gateway at `--url`, or at `SPOOL_URL` unless the command line names a database
    /// (``DatabaseOptions/databaseOnCommandLine(_:)``); else the database file.
    func backend(durability: DurabilityOption? = nil) async throws -> any Backend {
        let file = remote.url == nil ? try db.loadConfigFile() : nil
        if let url = try remote.remoteURL(databaseNamed: db.databaseOnCommandLine(file)) {
            return RemoteBackend(baseURL: url, token: remote.resolvedToken)
        }
        return LocalBackend(spool: try await db.open(with: file, durability: durability?.durability))
    }
}

/// Options of the commands that run workers.
struct WorkerOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Queues to work, comma-separated. [default: every queue in the config file, and 'default']", valueName: "a,b"))
    var queues: String?

    @Option(name: .long, help: "Jobs run at once per queue (overrides the config file).")
    var concurrency: Int?

    @Option(name: .long, help: "Lease length in seconds; a worker silent this long loses its jobs. [default: 30]")
    var leaseSeconds: Double?

    @Option(name: .long, help: "Heartbeat interval in seconds. [default: 10]")
    var heartbeatSeconds: Double?

    @Option(name: .long, help: "Seconds running jobs get to finish on shutdown before they are given back. [default: 25]")
    var graceSeconds: Double?

    @Flag(name: .long, help: "Do not register the demo job kinds (demo.sleep, demo.flaky, demo.noop).")
    var noDemoJobs = false

    @Flag(name: .long, help: "Register the demo job kinds even though API tokens are configured (they are off by default then).")
    var demoJobs = false

    /// Whether this process runs the demo kinds: yes on a token-less local setup (the quick
    /// start), no where API tokens say the deployment is shared, unless asked for.
    func runsDemoJobs(tokensConfigured: Bool) -> Bool {
        if noDemoJobs { return false }
        return demoJobs || !tokensConfigured
    }

    var queueList: [String]? {
        queues.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    }

    func apply(to config: inout EngineConfiguration) throws {
        if let s = leaseSeconds {
            guard s > 0 else { throw CLIError("--lease-seconds must be positive") }
            config.leaseDuration = .seconds(fractional: s)
        }
        if let s = heartbeatSeconds {
            guard s > 0 else { throw CLIError("--heartbeat-seconds must be positive") }
            config.heartbeatInterval = .seconds(fractional: s)
        }
        if let s = graceSeconds { config.shutdownGracePeriod = .seconds(fractional: max(0, s)) }
        if config.heartbeatInterval >= config.leaseDuration {
            throw CLIError("the heartbeat interval must be shorter than the lease (\(config.heartbeatInterval.seconds)s >= \(config.leaseDuration.seconds)s)")
        }
        if let c = concurrency {
            guard (1...10_000).contains(c) else { throw CLIError("--concurrency must be 1-10000") }
            config.defaultQueue.concurrency = c
            for name in Array(config.queues.keys) + (queueList ?? []) {
                var q = config.queue(name)
                q.concurrency = c
                config.queues[name] = q
            }
        }
    }
}
