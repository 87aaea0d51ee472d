import ArgumentParser
import Foundation
import Logging
import SpoolCore
import SpoolKinds
import SpoolPostgres
import SpoolSQLite
import Synchronization

/// `spool bench`: no-op jobs through the whole path on a temporary database, with figures.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure enqueue rate, end-to-end throughput and pickup latency on a temporary database.")

    @Option(help: "Jobs per throughput run.") var jobs = 100_000
    @Option(help: "Workers (jobs run at once) in the throughput runs.") var concurrency = 128
    @Option(help: "Concurrent callers enqueueing single jobs.") var producers = 64
    @Option(help: "Single enqueues timed one at a time for the pickup latency.") var latencySamples = 1000
    @Option(help: "Finished jobs put in the table before the last throughput run (0 skips it).") var history = 1_000_000
    @Option(help: "Jobs timed from completion to their SSE and WebSocket event (0 skips it).") var eventSamples = 1000
    @Option(help: "SQLite durability: full, normal, off.") var durability = "full"
    @Option(help: "Directory for the temporary database. [default: the system temp dir]") var dir: String?
    @Option(help: "A PostgreSQL server (postgres://user@host:port/db) to benchmark instead of SQLite; each run creates and drops its own database there.") var database: String?
    @Option(help: "With --database: worker process counts to run end to end, comma-separated.") var processes = "1,2,4"
    @Option(help: "Remote workers for the run through the HTTP worker protocol (0 skips it).") var httpWorkers = 8
    @Flag(help: "Skip the run through an HTTP service kind (a trivial loopback service).") var noServiceKind = false
    @Flag(help: "Skip the run through a command kind (running /bin/true).") var noCommandKind = false
    @Option(help: "Jobs in the command-kind run (each starts a process).") var commandJobs = 5000
    @Flag(help: "Skip the workflow runs (fan-in of 10,000 parents, fan-out to 100 children and to 100 subscribers).") var noWorkflows = false

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        if let database {
            guard PostgresJobStore.isPostgresURL(database) else { throw ValidationError("--database must be a postgres:// URL (SQLite runs on temporary files)") }
            let counts = processes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.filter { $0 > 0 }
            try await PostgresBench(serverURL: database, jobs: jobs, producers: producers, concurrency: concurrency,
                                    latencySamples: latencySamples, processCounts: counts.isEmpty ? [1] : counts).run(percentile: percentile)
            return
        }
        guard let level = SQLiteJobStore.Durability(rawValue: durability.uppercased()) else {
            throw ValidationError("--durability must be full, normal or off")
        }
        guard jobs > 0, concurrency > 0, producers > 0, latencySamples > 0, history >= 0 else {
            throw ValidationError("counts must be positive")
        }
        #if DEBUG
        print("warning: this is a debug build; build with -c release for meaningful figures")
        #endif
        print("spool bench: SQLite, durability \(level.rawValue.lowercased()), \(ProcessInfo.processInfo.activeProcessorCount) cores")

        let base = (dir ?? NSTemporaryDirectory()) + "/spool-bench-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }

        // 1. Enqueue rate.
        try await withBench(base + "/enqueue.sqlite", level) { spool, _ in
            let single = try await Self.timeEnqueues(spool, count: jobs, callers: producers)
            print(String(format: "enqueue, single jobs, %d concurrent callers:   %9.0f jobs/s", producers, single))
            let batched = try await timeBatchEnqueues(spool, count: jobs, batchSize: 100)
            print(String(format: "enqueue, batches of 100:                       %9.0f jobs/s", batched))
        }

        // 2. End to end on an empty table.
        let empty = try await withBench(base + "/e2e.sqlite", level) { spool, store in
            try await endToEnd(spool, store: store, count: jobs)
        }
        print(String(format: "end to end (enqueue, lease, run, complete), %d jobs, %d workers: %9.0f jobs/s", jobs, concurrency, empty))

        // 2b. Workers alone: the jobs are already queued.
        let drain = try await withBench(base + "/drain.sqlite", level) { spool, store in
            try await drainRate(spool, store: store, count: jobs)
        }
        print(String(format: "run only (lease, run, complete), %d jobs queued beforehand, %d workers: %9.0f jobs/s", jobs, concurrency, drain))

        // 3. Pickup latency with idle workers.
        let latencies = try await withBench(base + "/latency.sqlite", level) { spool, store in
            try await Self.pickupLatency(spool, samples: latencySamples)
        }
        print(String(format: "pickup latency (enqueue call -> handler start, idle workers, %d samples): p50 %.2f ms  p95 %.2f ms  p99 %.2f ms",
                     latencySamples, percentile(latencies, 0.50), percentile(latencies, 0.95), percentile(latencies, 0.99)))

        // 3b. Push latency: job completion -> event at an SSE and a WebSocket client.
        if eventSamples > 0 {
            let (sse, ws) = try await withBench(base + "/events.sqlite", level) { spool, _ in
                try await EventLatency(spool: spool, samples: eventSamples).run()
            }
            for (name, values) in [("SSE      ", sse), ("WebSocket", ws)] {
                print(String(format: "event latency, %@ (handler returns -> event parsed by a client over loopback, %d samples): p50 %.2f ms  p95 %.2f ms  p99 %.2f ms",
                             name, values.count, percentile(values, 0.50), percentile(values, 0.95), percentile(values, 0.99)))
            }
        }

        // 3c. Remote workers over the HTTP worker protocol.
        if httpWorkers > 0 {
            let bench = { (spool: Spool) in HTTPWorkerBench(spool: spool, workers: httpWorkers, producers: producers, batch: 100) }
            let rate = try await withBench(base + "/http.sqlite", level) { spool, _ in try await bench(spool).endToEnd(count: jobs) }
            print(String(format: "end to end through the HTTP worker protocol, %d jobs, %d remote workers (lease and complete in batches of up to 100): %9.0f jobs/s",
                         jobs, httpWorkers, rate))
            let pickups = try await withBench(base + "/http-latency.sqlite", level) { spool, _ in
                try await bench(spool).pickupLatency(samples: latencySamples)
            }
            print(String(format: "pickup latency, long-polling remote worker (enqueue call -> lease answer, %d samples): p50 %.2f ms  p95 %.2f ms  p99 %.2f ms",
                         latencySamples, percentile(pickups, 0.50), percentile(pickups, 0.95), percentile(pickups, 0.99)))
        }

        // 3d. Jobs through an HTTP service kind (a config-declared kind calling a loopback service).
        if !noServiceKind {
            let holder = HTTPClientHolder()
            let rate = try await ServiceKindBench.withService { url in
                try await withBench(base + "/service.sqlite", level) { spool, store in
                    try await endToEnd(spool, store: store, count: jobs) { ServiceKindBench.register(on: spool, url: url, client: holder) }
                }
            }
            await holder.shutdown()
            print(String(format: "end to end through an HTTP service kind (a loopback service answering 200 {}), %d jobs, %d workers: %9.0f jobs/s",
                         jobs, concurrency, rate))
        }

        // 3e. Jobs through a command kind: one process started (and reaped) per job.
        if !noCommandKind {
            let program = ["/bin/true", "/usr/bin/true"].first { CommandKind.checkProgram($0) == nil } ?? "/bin/true"
            let count = min(jobs, commandJobs)
            let rate = try await withBench(base + "/command.sqlite", level) { spool, store in
                try await endToEnd(spool, store: store, count: count) {
                    spool.register(CommandKind(kind: "bench.noop", arguments: [program]).handler())
                }
            }
            print(String(format: "end to end through a command kind (\(program) per job), %d jobs, %d workers: %9.0f jobs/s",
                         count, concurrency, rate))
        }

        // 3f. Workflows, on an empty table and with the history.
        if !noWorkflows {
            let bench = WorkflowBench(concurrency: concurrency)
            for rows in Set([0, history]).sorted() {
                let f = try await bench.run(path: base + "/workflows-\(rows).sqlite", level: level, history: rows)
                let table = rows == 0 ? "empty table" : "\(rows) finished jobs in the table"
                print(String(format: "workflows, %@: fan-in of %d parents into 1 child: child enqueued in %.1f ms, parents run at %.0f jobs/s, child started %.1f ms after the last parent finished",
                             table, bench.fanIn, f.childEnqueueMs, f.parentsPerSecond, f.releaseMs))
                print(String(format: "workflows, %@: completing 1 parent of %d waiting children (releases them): p50 %.2f ms  p95 %.2f ms; publishing 1 event to %d subscribers (event + %d jobs): p50 %.2f ms  p95 %.2f ms",
                             table, bench.fanOut, percentile(f.fanOutCompleteMs, 0.5), percentile(f.fanOutCompleteMs, 0.95),
                             bench.fanOut, bench.fanOut, percentile(f.publishMs, 0.5), percentile(f.publishMs, 0.95)))
            }
        }

        // 4. End to end with a large history of finished jobs.
        if history > 0 {
            let withHistory = try await withBench(base + "/history.sqlite", level) { spool, store in
                let seedStart = ContinuousClock.now
                try await store.seedFinishedJobs(count: history, queue: "bench", kind: "bench.noop")
                print(String(format: "  (seeded %d finished jobs in %.1f s)", history, (ContinuousClock.now - seedStart).seconds))
                return try await endToEnd(spool, store: store, count: jobs)
            }
            print(String(format: "end to end with %d finished jobs in the table:  %9.0f jobs/s (%.0f%% of the empty table)",
                         history, withHistory, withHistory / empty * 100))
        }
    }

    /// Runs `body` on a fresh store with a no-op handler registered.
    private func withBench<T: Sendable>(_ path: String, _ level: SQLiteJobStore.Durability, _ body: (Spool, SQLiteJobStore) async throws -> T) async throws -> T {
        let store = try SQLiteJobStore(path: path, durability: level)
        try await store.migrate()
        let spool = Spool(store: store, configuration: Self.engineConfiguration(concurrency: concurrency), logger: Logger(label: "bench"))
        let result = try await body(spool, store)
        try await store.close()
        return result
    }

    /// The engine settings of every bench run: `concurrency` workers, no retention.
    static func engineConfiguration(concurrency: Int) -> EngineConfiguration {
        var config = EngineConfiguration()
        config.defaultQueue = QueueConfiguration(concurrency: concurrency, timeout: .seconds(60), maxAttempts: 3, depthLimit: nil)
        config.leaseBatchSize = max(100, concurrency)
        config.completedRetention = nil
        config.admission.queues = ["bench"]
        return config
    }

    /// `count` single enqueues of `kind` to the `bench` queue from `callers` concurrent tasks; jobs/s.
    static func timeEnqueues(_ spool: Spool, count: Int, callers: Int, kind: String = "bench.noop") async throws -> Double {
        let next = Counter()
        let start = ContinuousClock.now
        try await withThrowingDiscardingTaskGroup { group in
            for _ in 0..<callers {
                group.addTask {
                    while next.increment() <= count {
                        try await spool.enqueue(NewJob(queue: "bench", kind: kind))
                    }
                }
            }
        }
        return Double(count) / (ContinuousClock.now - start).seconds
    }

    private func timeBatchEnqueues(_ spool: Spool, count: Int, batchSize: Int) async throws -> Double {
        let start = ContinuousClock.now
        var done = 0
        while done < count {
            let n = min(batchSize, count - done)
            _ = try await spool.enqueue(Array(repeating: NewJob(queue: "bench", kind: "bench.noop"), count: n))
            done += n
        }
        return Double(count) / (ContinuousClock.now - start).seconds
    }

    /// Producers enqueue `count` single jobs while workers run them; returns jobs/s from the
    /// first enqueue to the last completion.
    private func endToEnd(_ spool: Spool, store: SQLiteJobStore, count: Int, register: (() -> Void)? = nil) async throws -> Double {
        try await timeWorkers(spool, store: store, count: count, register: register) {
            _ = try await Self.timeEnqueues(spool, count: count, callers: producers)
        }
    }

    /// Enqueues `count` jobs in batches, then times workers running them all.
    private func drainRate(_ spool: Spool, store: SQLiteJobStore, count: Int) async throws -> Double {
        _ = try await timeBatchEnqueues(spool, count: count, batchSize: 1000)
        return try await timeWorkers(spool, store: store, count: count) {}
    }

    /// Starts no-op workers, runs `produce`, and returns jobs/s from the start until `count`
    /// more jobs have completed.
    private func timeWorkers(_ spool: Spool, store: SQLiteJobStore, count: Int, register: (() -> Void)? = nil,
                             produce: () async throws -> Void) async throws -> Double {
        if let register { register() } else { spool.register(AnyJobHandler(kind: "bench.noop") { _, _ in nil }) }
        let worker = spool.worker(queues: ["bench"])
        let before = try await completedCount(store)
        let start = ContinuousClock.now
        let workerTask = Task { try await worker.run() }
        try await produce()
        while try await completedCount(store) - before < count {
            if ContinuousClock.now - start > .seconds(600) { throw CLIError("the run did not finish in 10 minutes") }
            try await Task.sleep(for: .milliseconds(20))
        }
        let elapsed = ContinuousClock.now - start
        worker.stop()
        try await workerTask.value
        return Double(count) / elapsed.seconds
    }

    private func completedCount(_ store: SQLiteJobStore) async throws -> Int {
        try await store.queueStats(tenant: nil).first { $0.name == "bench" }?.counts[.completed] ?? 0
    }

    /// Enqueues one job at a time with idle workers; returns enqueue-call-to-handler-start times in ms.
    static func pickupLatency(_ spool: Spool, samples: Int) async throws -> [Double] {
        struct Sample: Codable, Sendable { var n: Int }
        // The handler reports its start through a stream (not a flag polled in a loop, which
        // would take a core from the worker and the database on a small machine).
        let (starts, startFeed) = AsyncStream.makeStream(of: (n: Int, at: ContinuousClock.Instant).self)
        spool.register(kind: "bench.noop", payload: Sample.self) { sample, _ in
            startFeed.yield((sample.n, ContinuousClock.now))
        }
        let worker = spool.worker(queues: ["bench"])
        let workerTask = Task { try await worker.run() }
        try await Task.sleep(for: .milliseconds(100))
        var latencies: [Double] = []
        var startsIterator = starts.makeAsyncIterator()
        for n in 0..<samples {
            let t0 = ContinuousClock.now
            let timer = Task {
                try await Task.sleep(for: .seconds(10))
                startFeed.yield((-1 - n, ContinuousClock.now))  // gives up on sample n (not a later one)
            }
            try await spool.enqueue(try NewJob(queue: "bench", kind: "bench.noop", payload: Sample(n: n)))
            var started: ContinuousClock.Instant?
            while let start = await startsIterator.next(), start.n != -1 - n {
                if start.n == n { started = start.at; break }
            }
            timer.cancel()
            guard let started else { throw CLIError("job \(n) was not picked up within 10 s") }
            latencies.append((started - t0).seconds * 1000)
            // Let the completion commit so the next sample starts with idle workers.
            try await Task.sleep(for: .milliseconds(2))
        }
        worker.stop()
        try await workerTask.value
        return latencies
    }

    func percentile(_ values: [Double], _ p: Double) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
    }
}

/// A shared counter for benchmark tasks.
final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    /// Adds one and returns the new value.
    @discardableResult
    func increment() -> Int { value.add(1, ordering: .relaxed).newValue }
    func add(_ n: Int) { value.add(n, ordering: .relaxed) }
    var current: Int { value.load(ordering: .relaxed) }
}

/// A value shared between benchmark tasks.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
