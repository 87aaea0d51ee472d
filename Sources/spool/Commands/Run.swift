import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SpoolCore
import SpoolDemoJobs

/// Builds the engine and runs its workers until SIGTERM or SIGINT.
func runWorkers(store: StoreOptions, worker: WorkerOptions, role: String) async throws {
    store.bootstrapLogging()
    let spool = try await store.open { try worker.apply(to: &$0) }
    if !worker.noDemoJobs { DemoJobs.register(on: spool) }
    let logger = Logger(label: "spool")
    let database = store.databasePath(try store.loadConfigFile())
    logger.info("\(role) starting", metadata: [
        "database": "\(database)",
        "kinds": "\(spool.registeredKinds.joined(separator: ","))",
    ])
    let group = ServiceGroup(configuration: .init(
        services: [.init(service: spool.worker(queues: worker.queueList))],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
    try await group.run()
    try await spool.store.close()
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Spool: the engine and its workers in one process (the HTTP gateway joins here).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var worker: WorkerOptions
    func run() async throws {
        do { try await runWorkers(store: store, worker: worker, role: "spool serve") } catch { throw explain(error) }
    }
}

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run workers only, for the queues given.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var worker: WorkerOptions
    func run() async throws {
        do { try await runWorkers(store: store, worker: worker, role: "spool worker") } catch { throw explain(error) }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create or upgrade the database schema.")
    @OptionGroup var store: StoreOptions
    func run() async throws {
        let spool = try await store.open()
        try await spool.store.close()
        print("schema up to date: \(store.databasePath(try store.loadConfigFile()))")
    }
}
