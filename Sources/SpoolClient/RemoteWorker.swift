import Foundation
import Logging
import ServiceLifecycle
import SpoolCore
import Synchronization

/// Runs job handlers on a machine that reaches Spool only over HTTP (no database access), with
/// the worker protocol: long-poll leases of the kinds it has handlers for, heartbeats, progress,
/// completions and failures in batches, and on a graceful stop the jobs it could not finish in
/// the grace period given back. Run it as a service (`spool worker --url` does).
///
/// ```swift
/// let client = SpoolClient(url: "http://spool.internal:8080", token: token)
/// let worker = RemoteWorker(client: client, handlers: [AnyJobHandler(RenderReport())],
///                           settings: .init(queues: ["reports"], concurrency: 4))
/// try await ServiceGroup(services: [worker], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
public final class RemoteWorker: Service, Sendable {
    public struct Settings: Sendable {
        public var queues: [String]
        /// Handlers running at once.
        public var concurrency: Int
        /// How long one lease call waits for work.
        public var wait: Duration
        /// On a graceful stop, how long running handlers get before their jobs are given back.
        public var gracePeriod: Duration
        public var identity: SpoolClient.WorkerIdentity

        public init(queues: [String] = ["default"], concurrency: Int = 10, wait: Duration = .seconds(5),
                    gracePeriod: Duration = .seconds(25), identity: SpoolClient.WorkerIdentity? = nil) {
            self.queues = queues
            self.concurrency = max(1, concurrency)
            self.wait = wait
            self.gracePeriod = gracePeriod
            self.identity = identity ?? .init(
                id: EngineConfiguration.defaultWorkerID(), name: String(ProcessInfo.processInfo.processName.prefix(200)),
                host: String(ProcessInfo.processInfo.hostName.prefix(200)), pid: Int(ProcessInfo.processInfo.processIdentifier),
                version: "spool-swift", concurrency: max(1, concurrency))
        }
    }

    /// One attempt under way here.
    private final class Attempt: Sendable {
        let document: SpoolClient.LeasedJobDocument
        let deadline: ContinuousClock.Instant
        let task = Mutex<Task<Void, Never>?>(nil)
        init(_ document: SpoolClient.LeasedJobDocument) {
            self.document = document
            deadline = .now + .seconds(document.timeout_seconds)
        }
        var id: String { document.id }
        var token: String { document.lease_token }
        func cancel() { task.withLock { $0?.cancel() } }
    }

    private enum Report: Sendable {
        case complete(id: String, token: String, result: Data?)
        case fail(id: String, token: String, error: String, retryable: Bool, retryAfter: Duration?, timedOut: Bool)
        var id: String {
            switch self {
            case .complete(let id, _, _), .fail(let id, _, _, _, _, _): id
            }
        }
    }

    private struct State {
        /// Attempts whose outcome is not known yet.
        var running: [String: Attempt] = [:]
        /// Attempts whose outcome is queued or being sent: still heartbeated.
        var unreported: [String: Attempt] = [:]
        var reports: [Report] = []
        /// Handler tasks still alive (one that ignores cancellation keeps its slot).
        var busy = 0
        var stopping = false
        var finished = false
        /// After a stop, reports and heartbeats give up at this time (a gateway that stays
        /// down must not keep the process from exiting; the leases expire and the jobs run again).
        var giveUpAt: ContinuousClock.Instant?
        var heartbeatInterval: Duration = .seconds(10)
    }

    private let client: SpoolClient
    private let handlers: [String: AnyJobHandler]
    private let settings: Settings
    private let logger: Logger
    private let state = Mutex(State())
    /// Rung when a slot frees, a report is queued, or the worker stops.
    private let bell = Doorbell()

    public init(client: SpoolClient, handlers: [AnyJobHandler], settings: Settings = Settings(), logger: Logger = Logger(label: "spool.remote-worker")) {
        self.client = client
        self.handlers = Dictionary(handlers.map { ($0.kind, $0) }, uniquingKeysWith: { $1 })
        self.settings = settings
        self.logger = logger
    }

    /// Stops leasing; ``run()`` returns once running jobs have finished or been given back.
    public func stop() {
        state.withLock { $0.stopping = true }
        bell.ring()
    }

    public func run() async throws {
        guard !handlers.isEmpty else { throw SpoolClientError(status: 0, type: "no-handlers", detail: "a remote worker needs at least one handler") }
        logger.info("remote worker started", metadata: [
            "url": "\(client.baseURL)", "worker_id": "\(settings.identity.id)", "kinds": "\(handlers.keys.sorted().joined(separator: ","))",
        ])
        var failure: (any Error)?
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await withDiscardingTaskGroup { group in
                    group.addTask { await self.reportLoop() }
                    group.addTask { await self.heartbeatLoop() }
                    do { try await self.leaseLoop() } catch { failure = error }
                    await self.drain()
                    self.state.withLock { $0.finished = true }
                    self.bell.ring()
                }
            } onCancel: { self.stop() }
        } onGracefulShutdown: { self.stop() }
        // Leaves the registry rather than showing as lost.
        _ = try? await client.heartbeat(workerID: settings.identity.id, leases: [], stopped: true)
        logger.info("remote worker stopped")
        if let failure { throw failure }
    }

    // MARK: Leasing

    private func leaseLoop() async throws {
        var failures = 0
        let kinds = handlers.keys.sorted()
        while true {
            let (stopping, free) = state.withLock { ($0.stopping, settings.concurrency - $0.busy) }
            if stopping { return }
            if free <= 0 {
                await bell.wait(timeout: .seconds(1))
                continue
            }
            let lease: SpoolClient.Lease
            do {
                lease = try await client.lease(settings.identity, queues: settings.queues, kinds: kinds, max: min(free, 100), wait: settings.wait)
                failures = 0
            } catch let error as SpoolClientError where !error.isUnavailable {
                logger.error("the gateway refuses this worker", metadata: ["error": "\(error)"])
                throw error  // a wrong token or scope does not fix itself
            } catch {
                failures += 1
                let delay = Duration.milliseconds(min(5000, 100 << min(failures, 6)))
                logger.warning("leasing failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                await bell.wait(timeout: delay)
                continue
            }
            state.withLock { $0.heartbeatInterval = .seconds(max(0.2, lease.heartbeat_seconds)) }
            for document in lease.jobs {
                if state.withLock({ $0.stopping }) {
                    try? await client.release(document.id, token: document.lease_token)  // leased as the stop came
                } else {
                    start(document)
                }
            }
        }
    }

    private func start(_ document: SpoolClient.LeasedJobDocument) {
        let attempt = Attempt(document)
        state.withLock { $0.running[attempt.id] = attempt; $0.busy += 1 }
        guard var job = document.job, let handler = handlers[document.kind] else {
            finish(attempt, .fail(id: attempt.id, token: attempt.token, error: "no handler for kind '\(document.kind)' in this worker",
                                  retryable: false, retryAfter: nil, timedOut: false))
            state.withLock { $0.busy -= 1 }
            return
        }
        job.workerID = settings.identity.id
        let client = self.client, jobID = job.id
        let parents = (document.parents ?? []).compactMap(\.parentResult)
        let context = JobContext(job: job, lease: LeaseToken(attempt.token), parents: parents, logger: logger) { progress in
            do {
                try await client.progress(attempt.id, token: attempt.token, progress)
            } catch let error as SpoolClientError where error.type == "lease-lost" {
                throw SpoolError.leaseLost(jobID)  // what handlers are told to expect
            }
        }
        // A task of its own, not a child: a handler that ignores cancellation must not hold up a stop.
        let task = Task {
            let report: Report
            do {
                let result = try await handler.run(job.payload, context)
                report = .complete(id: attempt.id, token: attempt.token, result: result)
            } catch {
                let (retryable, after): (Bool, Duration?) = switch error {
                case JobFailure.nonRetryable: (false, nil)
                case JobFailure.retry(_, let after): (true, after)
                default: (true, nil)
                }
                report = .fail(id: attempt.id, token: attempt.token, error: "\(error)", retryable: retryable, retryAfter: after, timedOut: false)
            }
            self.finish(attempt, report)
            self.state.withLock { $0.busy -= 1 }
            self.bell.ring()
        }
        attempt.task.withLock { $0 = task }
    }

    /// Ends an attempt with `report` (nil: nothing to say, the lease is gone or given back).
    /// False when it had ended already.
    @discardableResult
    private func finish(_ attempt: Attempt, _ report: Report?) -> Bool {
        let ended = state.withLock { s -> Bool in
            guard s.running[attempt.id] === attempt else { return false }
            s.running.removeValue(forKey: attempt.id)
            if let report {
                s.reports.append(report)
                s.unreported[attempt.id] = attempt
            }
            return true
        }
        if ended { bell.ring() }
        return ended
    }

    // MARK: Reports and heartbeats

    private func reportLoop() async {
        var failures = 0
        while true {
            let (batch, done, givingUp) = state.withLock { s -> ([Report], Bool, Bool) in
                let batch = Self.takeBatch(&s.reports)
                let givingUp = s.giveUpAt.map { ContinuousClock.now >= $0 } ?? false
                return (batch, s.finished && (batch.isEmpty || givingUp), givingUp)
            }
            if done || Task.isCancelled {
                if !batch.isEmpty { logger.warning("reports not sent; those jobs run again when their leases expire", metadata: ["count": "\(batch.count)"]) }
                return
            }
            if batch.isEmpty {
                await bell.wait(timeout: .seconds(1))
                continue
            }
            do {
                try await send(batch)
                failures = 0
            } catch let error as SpoolClientError where error.isUnavailable && !givingUp {
                failures += 1
                logger.warning("reporting failed; retrying", metadata: ["error": "\(error)"])
                state.withLock { $0.reports.insert(contentsOf: batch, at: 0) }
                try? await Task.sleep(for: .milliseconds(min(5000, 100 << min(failures, 6))))
                continue
            } catch {
                logger.error("reports not sent; those jobs run again when their leases expire", metadata: ["error": "\(error)"])
            }
            state.withLock { s in for report in batch { s.unreported.removeValue(forKey: report.id) } }
            bell.ring()
        }
    }

    /// Reports for one request: at most 1,000, and about 512 KiB (the gateway takes 1 MiB).
    private static func takeBatch(_ reports: inout [Report]) -> [Report] {
        var size = 0
        var n = 0
        while n < reports.count && n < 1000 {
            let weight: Int = switch reports[n] {
            case .complete(_, _, let result): 200 + (result?.count ?? 0)
            case .fail(_, _, let error, _, _, _): 300 + error.utf8.count
            }
            if n > 0 && size + weight > 512 * 1024 { break }
            size += weight
            n += 1
        }
        defer { reports.removeFirst(n) }
        return Array(reports.prefix(n))
    }

    /// Sends reports; a request refused whole (one result too large, say) goes again one job
    /// at a time, so that only the bad one is lost.
    private func send(_ batch: [Report]) async throws {
        do {
            try await sendTogether(batch)
        } catch let error as SpoolClientError where !error.isUnavailable && batch.count > 1 {
            for report in batch {
                do { try await sendTogether([report]) } catch let error as SpoolClientError where !error.isUnavailable {
                    logger.error("report refused; the job runs again when its lease expires", metadata: ["job": "\(report.id)", "error": "\(error)"])
                }
            }
        }
    }

    private func sendTogether(_ batch: [Report]) async throws {
        var completes: [(id: String, token: String, result: Data?)] = []
        var fails: [(id: String, token: String, error: String, retryable: Bool, retryAfter: Duration?, timedOut: Bool)] = []
        for report in batch {
            switch report {
            case let .complete(id, token, result): completes.append((id, token, result))
            case let .fail(id, token, error, retryable, after, timedOut): fails.append((id, token, error, retryable, after, timedOut))
            }
        }
        var outcomes: [SpoolClient.Outcome] = []
        if !completes.isEmpty { outcomes += try await client.complete(completes) }
        if !fails.isEmpty { outcomes += try await client.fail(fails) }
        for outcome in outcomes where !["completed", "retried", "failed"].contains(outcome.status) {
            logger.warning("report refused", metadata: ["job": "\(outcome.job_id)", "status": "\(outcome.status)", "detail": "\(outcome.detail ?? "")"])
        }
    }

    /// Heartbeats running and unreported jobs, and stops attempts past their deadline.
    private func heartbeatLoop() async {
        var last = ContinuousClock.now
        while !Task.isCancelled {
            await bell.wait(timeout: .milliseconds(250))
            let now = ContinuousClock.now
            let (done, running, interval) = state.withLock { s in
                (s.finished && (s.unreported.isEmpty || s.giveUpAt.map { now >= $0 } ?? false),
                 Array(s.running.values), s.heartbeatInterval)
            }
            if done { return }
            for attempt in running where now >= attempt.deadline {
                if finish(attempt, .fail(id: attempt.id, token: attempt.token, error: "attempt timed out after \(attempt.document.timeout_seconds)s",
                                         retryable: true, retryAfter: nil, timedOut: true)) {
                    attempt.cancel()
                }
            }
            guard now - last >= interval else { continue }
            last = now
            let held = state.withLock { Array($0.running.values) + Array($0.unreported.values) }
            // The gateway takes 1,000 leases per call.
            for start in stride(from: 0, to: max(held.count, 1), by: 1000) {
                let chunk = Array(held[start..<min(held.count, start + 1000)])
                do {
                    let lost = try await client.heartbeat(workerID: settings.identity.id, leases: chunk.map { ($0.id, $0.token) })
                    for attempt in chunk where lost.contains(attempt.id) {
                        if finish(attempt, nil) {
                            logger.warning("lease lost; stopping the job here", metadata: ["job": "\(attempt.id)"])
                            attempt.cancel()
                        }
                    }
                } catch {
                    logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// Lets running handlers finish within the grace period, then gives their jobs back.
    private func drain() async {
        let deadline = ContinuousClock.now + settings.gracePeriod
        // (Cancelled: no waiting, which would spin, since a cancelled task's waits return at once.)
        while state.withLock({ !$0.running.isEmpty }) && ContinuousClock.now < deadline && !Task.isCancelled {
            await bell.wait(timeout: min(.milliseconds(250), deadline - ContinuousClock.now))
        }
        for attempt in state.withLock({ Array($0.running.values) }) where finish(attempt, nil) {
            attempt.cancel()
            do {
                try await client.release(attempt.id, token: attempt.token)
            } catch {
                logger.warning("could not give a job back; it runs again when its lease expires", metadata: ["job": "\(attempt.id)", "error": "\(error)"])
            }
        }
        // The reports of what finished go out before the worker ends, for 10 s at most.
        let flushBy = ContinuousClock.now + .seconds(10)
        state.withLock { $0.giveUpAt = flushBy }
        while state.withLock({ !$0.reports.isEmpty || !$0.unreported.isEmpty }) && ContinuousClock.now < flushBy && !Task.isCancelled {
            await bell.wait(timeout: .milliseconds(100))
        }
    }
}
