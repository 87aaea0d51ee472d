import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SpoolClient
import SpoolCore
import Metrics
import Prometheus
import SpoolDemoJobs
import SpoolGateway
import SpoolKinds
import SpoolPostgres
import SpoolWebhooks

/// The registry `/metrics` reads; swift-metrics is bootstrapped with it once per process.
let metricsRegistry: PrometheusCollectorRegistry = {
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusExport(registry: registry))
    return registry
}()

/// Builds the engine and runs it until SIGTERM or SIGINT: workers (unless `--no-workers`),
/// and the HTTP gateway when `gateway` is given.
func runSpool(store: DatabaseOptions, durability: DurabilityOption, worker: WorkerOptions, gateway: GatewayOptions?, role: String) async throws {
    store.bootstrapLogging()
    let file = try store.loadConfigFile()
    let declared = try (file ?? ConfigFile()).declaredKinds()  // config errors before anything opens
    let publicURL = try file?.publicURL()
    // These commands work a database. Silently working ./spool.sqlite instead of the gateway
    // the user named would look like a worker that never gets any job.
    if !store.databaseNamed(file), ProcessInfo.processInfo.environment["SPOOL_URL"] != nil {
        throw CLIError("\(role) works a database (--database), not a gateway (SPOOL_URL is set): "
            + "`spool worker --url` runs workers over HTTP")
    }
    let spool = try await store.open(with: file, durability: durability.durability) { config in
        try worker.apply(to: &config)
        config.workerName = role
        config.admission.queues.formUnion(worker.queueList ?? [])
    }
    let tokensConfigured = !(file?.gateway?.tokens ?? []).isEmpty || !(ProcessInfo.processInfo.environment["SPOOL_TOKENS"] ?? "").isEmpty
    if worker.runsDemoJobs(tokensConfigured: tokensConfigured) { DemoJobs.register(on: spool) }
    let webhooks = try file?.webhookConfiguration() ?? ConfigFile().webhookConfiguration()
    let deliverer = WebhookDeliverer(store: spool.store, configuration: webhooks)
    spool.register(deliverer.handler)
    // Kinds without code: services called over HTTP (signed with the tenant's webhook
    // secret) and commands. (The payload schemas came with the engine's configuration.)
    for kind in declared.runners.keys.sorted() where declared.runners[kind] != "elsewhere" && spool.handler(for: kind) != nil {
        try? await spool.store.close()
        throw CLIError("kinds.\(kind): this kind is built in (\(role) already runs it)")
    }
    let serviceClient = declared.services.isEmpty ? nil : HTTPServiceKind.makeClient()
    let callbacks = ServiceCallbacks(baseURL: publicURL)
    for kind in declared.services {
        spool.register(kind.handler(client: serviceClient!, callbacks: callbacks, secret: deliverer.secret(tenant:)))
    }
    for kind in declared.commands { spool.register(kind.handler()) }
    let logger = Logger(label: "spool")
    logger.info("\(role) starting", metadata: [
        "database": "\(PostgresJobStore.redacted(store.databasePath(file)))",
        "kinds": "\(spool.registeredKinds.joined(separator: ","))",
    ])
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
    if gateway?.noWorkers != true {
        let pool = spool.worker(queues: worker.queueList)
        warnAboutIdleQueues(pool.queues, spool: spool, logger: logger)
        services.append(.init(service: pool))
    } else {
        // A gateway alone still counts its remote workers' results in the queue statistics.
        services.append(.init(service: StatisticsWriter(spool: spool)))
    }
    if let gateway {
        var config = try gateway.configuration(file)
        // Before any worker starts: a port taken by another process is said plainly.
        try PortCheck.ensureFree(host: config.host, port: config.port)
        logger.info("API tokens loaded", metadata: ["count": "\(config.tokens.count)"])
        if spool.ownKinds.isEmpty && declared.runners.isEmpty && spool.configuration.admission.kinds.isEmpty {
            logger.warning("this gateway knows no job kinds (no handler here, none declared in the config file): a queue accepts any kind until a worker of that queue announces its kinds; declare them under 'kinds' or 'queues.<name>.kinds' to refuse unknown kinds")
        }
        config.webhooks = webhooks
        let api = Gateway(spool: spool, configuration: config, metrics: metricsRegistry)
        let host = config.host
        let app = try api.application(logger: logger) { port in
            logger.info("HTTP API listening", metadata: ["address": "http://\(host):\(port)"])
            // Services that answer 202 report here, unless gateway.public_url says otherwise.
            if host != "0.0.0.0" && host != "::" { callbacks.useIfUnset("http://\(host.contains(":") ? "[\(host)]" : host):\(port)") }
        }
        services.append(.init(service: app))
    }
    let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    do {
        try await group.run()
    } catch {
        try? await deliverer.shutdown()
        try? await serviceClient?.shutdown()
        try? await spool.store.close()
        throw error
    }
    try? await deliverer.shutdown()
    try? await serviceClient?.shutdown()
    try await spool.store.close()
}

/// Says at start-up which queues this process works without a handler for any kind they
/// take: their jobs would wait for another process, which is rarely what was meant.
func warnAboutIdleQueues(_ queues: [String], spool: Spool, logger: Logger) {
    let own = spool.ownKinds
    for queue in queues where queue != Webhook.queue {
        if let listed = spool.configuration.admission.kinds[queue], listed.isDisjoint(with: own) {
            logger.warning("this process works queue '\(queue)' but has a handler for none of its kinds; its jobs wait for another process",
                           metadata: ["queue": "\(queue)", "kinds": "\(listed.sorted().joined(separator: ","))"])
        } else if own.isEmpty {
            logger.warning("this process works queue '\(queue)' but has no job handlers (no demo kinds, no kinds in the config file); its jobs wait for another process",
                           metadata: ["queue": "\(queue)"])
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Spool: the HTTP API, the workers and the metrics in one process.")
    @OptionGroup var store: DatabaseOptions
    @OptionGroup var durability: DurabilityOption
    @OptionGroup var worker: WorkerOptions
    @OptionGroup var gateway: GatewayOptions
    func run() async throws {
        do { try await runSpool(store: store, durability: durability, worker: worker, gateway: gateway, role: "spool serve") } catch { throw explain(error) }
    }
}

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run workers only, for the queues given: on the database, or with --url on a gateway over HTTP (no database access).")
    @OptionGroup var store: DatabaseOptions
    @OptionGroup var durability: DurabilityOption
    @OptionGroup var remote: RemoteOptions
    @OptionGroup var worker: WorkerOptions
    func run() async throws {
        do {
            if let url = try remote.remoteURL(databaseNamed: store.databaseOnCommandLine(try store.loadConfigFile())) {
                try await runRemoteWorker(url: url, token: remote.resolvedToken, store: store, worker: worker)
            } else {
                try await runSpool(store: store, durability: durability, worker: worker, gateway: nil, role: "spool worker")
            }
        } catch { throw explain(error) }
    }
}

/// `spool worker --url`: the command kinds of the config file and the demo kinds, run over
/// the worker protocol. (HTTP service kinds sign with the tenant's secret, which such a worker
/// does not hold: they run in processes on the database.)
func runRemoteWorker(url: String, token: String?, store: DatabaseOptions, worker: WorkerOptions) async throws {
    store.bootstrapLogging()
    let declared = try (try store.loadConfigFile() ?? ConfigFile()).declaredKinds()
    // With a token the gateway is a shared one: the demo kinds only when asked for (as for serve).
    let handlers = declared.commands.map { $0.handler() } + (worker.runsDemoJobs(tokensConfigured: token != nil) ? DemoJobs.handlers : [])
    guard !handlers.isEmpty else {
        throw CLIError("no job kinds to run over HTTP: declare command kinds in the config file's kinds section, or add --demo-jobs; "
            + "run your own code with SpoolClient's RemoteWorker or the Python SDK")
    }
    if !declared.services.isEmpty {
        Logger(label: "spool").warning("HTTP service kinds are not run by workers over --url; run them with spool serve or spool worker on the database",
                                       metadata: ["kinds": "\(declared.services.map(\.kind).joined(separator: ","))"])
    }
    var settings = RemoteWorker.Settings(queues: worker.queueList ?? ["default"], concurrency: worker.concurrency ?? 10,
                                         gracePeriod: .seconds(fractional: worker.graceSeconds ?? 25))
    settings.identity.name = "spool worker --url"
    let logger = Logger(label: "spool")
    let remote = RemoteWorker(client: SpoolClient(url: url, token: token), handlers: handlers, settings: settings, logger: logger)
    var groupConfiguration = ServiceGroupConfiguration(services: [remote], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    // The grace period, giving jobs back, 10 s of reporting, and a margin.
    groupConfiguration.maximumGracefulShutdownDuration = settings.gracePeriod + .seconds(20)
    try await ServiceGroup(configuration: groupConfiguration).run()
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create or upgrade the database schema.")
    @OptionGroup var store: DatabaseOptions
    func run() async throws {
        let file = try store.loadConfigFile()
        let spool = try await store.open(with: file)
        try await spool.store.close()
        print("schema up to date: \(store.databasePath(file))")
    }
}
