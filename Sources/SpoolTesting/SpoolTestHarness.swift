import Foundation
import Logging
import SpoolCore
import SpoolSQLite

/// A Spool on a temporary SQLite file for a program's own tests, the way River's `rivertest`
/// and `Sidekiq::Testing` serve theirs:
///
/// ```swift
/// try await SpoolTestHarness.with { harness in
///     harness.spool.register(SendWelcomeEmail())
///     // One handler on one payload: its output, or the error it throws.
///     let sent = try await harness.run(SendWelcomeEmail(), .init(userID: 7))
///
///     // What code under test enqueued, and running it all, in order, right here.
///     try await signUp(spool: harness.spool, email: "a@example.com")
///     #expect(try await harness.enqueued(kind: SendWelcomeEmail.kind).count == 1)
///     let finished = try await harness.drain()
///     #expect(finished.allSatisfy { $0.state == .completed })
/// }
/// ```
///
/// Jobs run one at a time in the calling task, with the real store underneath (leases,
/// retries, results, events). Failed attempts are retried at once (the harness's queues have no
/// backoff) until their attempts are used up.
public final class SpoolTestHarness: Sendable {
    /// The engine: register handlers on it and hand it to the code under test.
    public let spool: Spool
    /// The temporary store under it.
    public let store: SQLiteJobStore
    private let directory: URL

    private init(spool: Spool, store: SQLiteJobStore, directory: URL) {
        self.spool = spool
        self.store = store
        self.directory = directory
    }

    /// Runs `body` with a fresh harness; the store is deleted afterwards. `configure` may change
    /// the engine's settings (queues, attempts, timeouts) first.
    public static func with<T>(configure: (inout EngineConfiguration) -> Void = { _ in },
                               _ body: (SpoolTestHarness) async throws -> T) async throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("spool-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteJobStore(path: directory.appendingPathComponent("spool.sqlite").path, durability: .off)
        try await store.migrate()
        var configuration = EngineConfiguration()
        configuration.defaultQueue.backoff = .none
        configure(&configuration)
        var logger = Logger(label: "spool.testing")
        logger.logLevel = .warning
        let harness = SpoolTestHarness(spool: Spool(store: store, configuration: configuration, logger: logger), store: store,
                                       directory: directory)
        do {
            let result = try await body(harness)
            try await store.close()
            return result
        } catch {
            try? await store.close()
            throw error
        }
    }

    /// The queue ``run(_:_:)`` puts its job in, so that it never takes the jobs of the code
    /// under test.
    public static let runQueue = "spool-testing.run"

    /// Runs `handler` on `payload` as a worker would (a real job, leased, with a working
    /// ``JobContext``) and returns its output, or throws what it threw.
    public func run<H: JobHandler>(_ handler: H, _ payload: H.Payload) async throws -> H.Output where H.Payload: Encodable {
        let job = try await spool.enqueue(try NewJob(queue: Self.runQueue, kind: H.kind, payload: payload)).job
        let leased = try await store.lease(LeaseRequest(queue: Self.runQueue, limit: 1, workerID: "spool-testing",
                                                        leaseDuration: .seconds(3600), kinds: [H.kind])).jobs.first
        guard let leased, leased.job.id == job.id else {
            throw SpoolError.invalid(field: "queue", reason: "the job was not handed out (is \(Self.runQueue) paused?)")
        }
        let context = JobContext(job: leased.job, lease: leased.lease, parents: leased.parents, store: store, logger: spool.logger)
        do {
            let output = try await handler.run(payload, context: context)
            let result: Data? = output is NoResult ? nil : try JSON.encode(output)
            try await store.complete(job.id, lease: leased.lease, result: result)
            return output
        } catch {
            try? await store.fail(job.id, lease: leased.lease, error: Self.attemptError(error, job: leased.job), retryAt: nil)
            throw error
        }
    }

    /// Jobs enqueued so far, oldest first (of one kind, queue or state if given).
    public func enqueued(kind: String? = nil, queue: String? = nil, state: JobState? = nil) async throws -> [Job] {
        var jobs: [Job] = []
        var cursor: String?
        repeat {
            let page = try await store.list(JobFilter(queue: queue, state: state, kind: kind, limit: 1000, cursor: cursor))
            jobs += page.jobs
            cursor = page.nextCursor
        } while cursor != nil
        return jobs.reversed()
    }

    /// Runs the ready jobs of `queue` whose kinds have handlers, and the jobs they enqueue,
    /// one at a time in order, until none is ready; returns the jobs that finished, in the
    /// order they did. Jobs scheduled for later stay where they are.
    @discardableResult
    public func drain(queue: String = "default", maxJobs: Int = 100_000) async throws -> [Job] {
        var finished: [Job] = []
        var ran = 0
        while ran < maxJobs {
            let batch = try await lease(queue: queue, kinds: spool.registeredKinds)
            if batch.isEmpty { break }
            for leased in batch {
                ran += 1
                try await runLeased(leased)
                if let job = try await store.job(leased.job.id, tenant: nil), job.state.isFinished { finished.append(job) }
            }
        }
        return finished
    }

    // MARK: Internals

    private func lease(queue: String, kinds: [String]) async throws -> [LeasedJob] {
        try await store.lease(LeaseRequest(queue: queue, limit: 100, workerID: "spool-testing", leaseDuration: .seconds(3600), kinds: kinds)).jobs
    }

    /// One attempt of a leased job through its registered handler, reported like a worker's.
    private func runLeased(_ leased: LeasedJob) async throws {
        let job = leased.job
        guard let handler = spool.handler(for: job.kind) else { return }
        let context = JobContext(job: job, lease: leased.lease, parents: leased.parents, store: store, logger: spool.logger)
        do {
            let result = try await handler.run(job.payload, context)
            do {
                try await store.complete(job.id, lease: leased.lease, result: result)
            } catch SpoolError.invalid(let field, let why) {
                try await fail(leased, AttemptError(attempt: job.attempt, message: "the handler's \(field) \(why)", at: Date(), reason: "non_retryable"))
            }
        } catch let error as SpoolError where Self.isStoreError(error) {
            throw error
        } catch {
            try await fail(leased, Self.attemptError(error, job: job))
        }
    }

    private func fail(_ leased: LeasedJob, _ error: AttemptError) async throws {
        let job = leased.job
        let retryAt = RetryPlan.retryAt(attempt: job.attempt, maxAttempts: job.maxAttempts, retryable: error.reason != "non_retryable",
                                        retryAfter: nil, backoff: spool.configuration.queue(job.queue).backoff, now: error.at)
        try await store.fail(job.id, lease: leased.lease, error: error, retryAt: retryAt)
    }

    private static func attemptError(_ error: any Error, job: Job) -> AttemptError {
        let reason = if case JobFailure.nonRetryable = error { "non_retryable" } else { "error" }
        return AttemptError(attempt: job.attempt, message: "\(error)", at: Date(), reason: reason, worker: "spool-testing")
    }

    private static func isStoreError(_ error: SpoolError) -> Bool {
        switch error {
        case .unavailable, .leaseLost: true
        default: false
        }
    }
}
