import Foundation
import Logging
import SpoolCore
import SpoolPostgres

/// `spool bench --database postgres://...`: the same no-op jobs on a PostgreSQL server, with
/// the workers in 1, 2 and 4 separate `spool worker` processes, as a cluster runs them.
///
/// Each run gets a fresh database on the server (created and dropped here), so the URL must be
/// allowed to `CREATE DATABASE`.
struct PostgresBench {
    let serverURL: String
    let jobs: Int
    let producers: Int
    let concurrency: Int
    let latencySamples: Int
    let processCounts: [Int]

    func run(percentile: ([Double], Double) -> Double) async throws {
        print("spool bench: PostgreSQL at \(PostgresJobStore.redacted(serverURL)), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        let enqueueRate = try await withDatabase { url, spool in
            try await Bench.timeEnqueues(spool, count: jobs, callers: producers, kind: "demo.noop")
        }
        print(String(format: "enqueue, single jobs, %d concurrent callers:   %9.0f jobs/s", producers, enqueueRate))
        for processes in processCounts {
            let rate = try await withDatabase { url, spool in
                try await endToEnd(url: url, spool: spool, processes: processes)
            }
            print(String(format: "end to end, %d jobs, %d worker process(es) x %d workers: %9.0f jobs/s",
                         jobs, processes, max(1, concurrency / processes), rate))
        }
        let latencies = try await withDatabase { _, spool in try await Bench.pickupLatency(spool, samples: latencySamples) }
        print(String(format: "pickup latency (enqueue call -> handler start, idle workers, %d samples): p50 %.2f ms  p95 %.2f ms  p99 %.2f ms",
                     latencySamples, percentile(latencies, 0.50), percentile(latencies, 0.95), percentile(latencies, 0.99)))
    }

    /// Runs `body` against a new, migrated database on the server, dropped afterwards.
    private func withDatabase<T: Sendable>(_ body: (String, Spool) async throws -> T) async throws -> T {
        try await PostgresJobStore.withScratchDatabase(on: serverURL, prefix: "spool_bench_") { url in
            var options = PostgresJobStore.Options()
            options.maxConnections = 40
            let store = try PostgresJobStore(url: url, options: options)
            do {
                try await store.migrate()
                var config = EngineConfiguration()
                config.defaultQueue = QueueConfiguration(concurrency: concurrency, timeout: .seconds(60), maxAttempts: 3, depthLimit: nil)
                config.leaseBatchSize = max(100, concurrency)
                let result = try await body(url, Spool(store: store, configuration: config, logger: Logger(label: "bench")))
                try? await store.close()
                return result
            } catch {
                try? await store.close()
                throw error
            }
        }
    }

    /// Starts `processes` worker processes, enqueues `jobs` single jobs from this process, and
    /// times from the first enqueue to the last completion.
    private func endToEnd(url: String, spool: Spool, processes: Int) async throws -> Double {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).path
        var children: [Process] = []
        defer { for child in children where child.isRunning { kill(child.processIdentifier, SIGKILL) } }
        for _ in 0..<processes {
            let child = Process()
            child.executableURL = URL(fileURLWithPath: binary)
            child.arguments = ["worker", "--database", url, "--queues", "bench", "--concurrency", String(max(1, concurrency / processes)),
                               "--log-level", "warning"]
            child.standardOutput = FileHandle.nullDevice
            try child.run()
            children.append(child)
        }
        try await Task.sleep(for: .seconds(1))  // let them connect and start listening
        let start = ContinuousClock.now
        _ = try await Bench.timeEnqueues(spool, count: jobs, callers: producers, kind: "demo.noop")
        while try await spool.store.queueStats(tenant: nil).first(where: { $0.name == "bench" })?.counts[.completed] ?? 0 < jobs {
            if ContinuousClock.now - start > .seconds(600) { throw CLIError("the run did not finish in 10 minutes") }
            try await Task.sleep(for: .milliseconds(20))
        }
        let elapsed = ContinuousClock.now - start
        for child in children { child.terminate() }
        for child in children { child.waitUntilExit() }
        return Double(jobs) / elapsed.seconds
    }
}
