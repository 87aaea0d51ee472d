import ArgumentParser
import Foundation
import SpoolSQLite

/// `spool seed`: writes finished jobs straight into a SQLite database, to try the dashboard
/// and the API on a big table (not for production data).
struct Seed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write N completed no-op jobs into a SQLite database (to try the dashboard on a big table).",
        shouldDisplay: false)
    @Option(help: "The SQLite file (created if missing).") var database: String
    @Option(help: "How many completed jobs to write.") var finished: Int
    @Option(help: "Their queue.") var queue = "history"
    @Option(help: "Their kind.") var kind = "demo.noop"

    func run() async throws {
        guard (1...100_000_000).contains(finished) else { throw CLIError("--finished must be 1 to 100000000") }
        let store = try SQLiteJobStore(path: database, durability: .normal)
        try await store.migrate()
        let started = ContinuousClock.now
        try await store.seedFinishedJobs(count: finished, queue: queue, kind: kind)
        try await store.close()
        print("wrote \(finished) completed jobs to \(database) in \(String(format: "%.1f", (ContinuousClock.now - started).seconds)) s")
    }
}
