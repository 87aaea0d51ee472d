import Foundation
import Logging
import Synchronization

/// Runs the jobs of one queue in this process, up to the queue's concurrency: leases in
/// batches, heartbeats every running job, enforces timeouts and reports outcomes.
final class QueueWorker: Sendable {
    let queue: String
    private let spool: Spool
    private let settings: QueueConfiguration
    private let logger: Logger
    private let bell = Doorbell()
    private let heartbeatBell = Doorbell()
    private let deadlineBell = Doorbell()

    private struct State {
        /// Jobs leased and not yet reported, for heartbeats and shutdown.
        var running: [JobID: RunningJob] = [:]
        /// Jobs whose handler has not finished: these take the queue's concurrency slots. A
        /// job's slot is free as soon as its outcome is known, while its report commits.
        var busySlots = 0
        /// Jobs whose outcome is being stored. At most `concurrency` of them may wait on top of
        /// the busy slots: when the store falls behind the handlers, leasing stops rather than
        /// holding ever more leases (each heartbeated, and run again if the process dies).
        var reporting = 0
        var stopping = false
        var finished = false
        /// Whether a lease may find something; cleared when a lease comes back short, set
        /// again by a wake-up or a poll.
        var mayHaveWork = true
        /// Counts wake-ups, so one that arrives during a lease is not lost.
        var wakeups = 0
        var nextRunAt: Date?
        /// When the deadline loop looks next.
        var nextDeadlineCheck = ContinuousClock.now
    }
    private let state = Mutex(State())

    init(queue: String, spool: Spool) {
        self.queue = queue
        self.spool = spool
        self.settings = spool.configuration.queue(queue)
        var logger = spool.logger
        logger[metadataKey: "queue"] = "\(queue)"
        self.logger = logger
    }

    private var store: any JobStore { spool.store }
    private var config: EngineConfiguration { spool.configuration }

    /// New work may be there (a signal from the store).
    func wake() {
        state.withLock { s in s.mayHaveWork = true; s.wakeups += 1 }
        bell.ring()
    }

    /// Asks the loop to stop leasing and wind down.
    func stop() {
        state.withLock { $0.stopping = true }
        bell.ring()
    }

    /// Cancels a running job of this queue, if this worker runs it.
    func cancelRunning(_ id: JobID) {
        if let job = state.withLock({ $0.running[id] }) {
            logger.info("cancelling running job", metadata: ["job": "\(id)"])
            stopHandler(job, .cancelled)
        }
    }

    var runningCount: Int { state.withLock { $0.running.count } }

    /// Runs until ``stop()``, then lets running jobs finish within the grace period and gives
    /// the rest back to the queue.
    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.heartbeatLoop() }
            group.addTask { await self.deadlineLoop() }
            await leaseLoop()
            await drain()
            state.withLock { $0.finished = true }
            heartbeatBell.ring()
            deadlineBell.ring()
        }
    }

    private func leaseLoop() async {
        var failures = 0
        while true {
            let (stopping, free, mayHaveWork, wakeups) = state.withLock { s in
                (s.stopping, min(settings.concurrency - s.busySlots, 2 * settings.concurrency - s.busySlots - s.reporting),
                 s.mayHaveWork, s.wakeups)
            }
            if stopping { return }
            if free > 0 && mayHaveWork {
                let want = min(free, config.leaseBatchSize)
                do {
                    // Only kinds this process has handlers for: other kinds of a shared queue are
                    // for other workers (remote ones, other programs).
                    let batch = try await store.lease(LeaseRequest(
                        queue: queue, limit: want, workerID: config.workerID, leaseDuration: config.leaseDuration,
                        kinds: spool.registeredKinds))
                    failures = 0
                    let running = batch.jobs.map(RunningJob.init)
                    let earliest = running.map(\.deadline).min()
                    var superseded: [RunningJob] = []
                    let wakeScanner = state.withLock { s in
                        for job in running {
                            // An older attempt of the same job still tracked here has lost its
                            // lease (the job was rescued or retried meanwhile): stop it.
                            if let old = s.running[job.id] { superseded.append(old) }
                            s.running[job.id] = job
                        }
                        s.busySlots += running.count
                        s.nextRunAt = batch.nextRunAt
                        if batch.jobs.count < want && s.wakeups == wakeups { s.mayHaveWork = false }
                        return earliest.map { $0 < s.nextDeadlineCheck } ?? false
                    }
                    for old in superseded { stopHandler(old, .leaseLost) }
                    if wakeScanner { deadlineBell.ring() }
                    for job in running { start(job) }
                    if batch.jobs.count == want { continue }
                } catch {
                    failures += 1
                    let delay = Duration.milliseconds(min(5000, 100 * (1 << min(failures, 6))))
                    logger.error("leasing failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                    await bell.wait(timeout: delay)
                    continue
                }
            }
            // Sleep until woken, or until the next scheduled job is due, or the poll interval.
            var timeout = config.pollInterval
            if let next = state.withLock({ $0.nextRunAt }) {
                timeout = min(timeout, .seconds(fractional: max(0.001, next.timeIntervalSinceNow)))
            }
            let before = state.withLock { $0.wakeups }
            await bell.wait(timeout: timeout)
            state.withLock { s in if s.wakeups == before { s.mayHaveWork = true } }  // a poll
        }
    }

    /// Waits for running jobs up to the grace period, then gives back what still runs.
    private func drain() async {
        let deadline = ContinuousClock.now + config.shutdownGracePeriod
        while runningCount > 0 && ContinuousClock.now < deadline {
            await bell.wait(timeout: deadline - ContinuousClock.now)
        }
        let left = state.withLock { Array($0.running.values) }.filter { !$0.isResolved }
        if !left.isEmpty {
            logger.warning("grace period over: giving running jobs back to the queue", metadata: ["count": "\(left.count)"])
        }
        for job in left { stopHandler(job, .shutdown) }
        while runningCount > 0 { await bell.wait(timeout: .milliseconds(50)) }
    }

    /// Stops attempts that ran past their timeout. Sleeps until the earliest deadline of the
    /// running jobs (at most a second); the lease loop wakes it for a job that is due sooner.
    private func deadlineLoop() async {
        while true {
            let now = ContinuousClock.now
            let (finished, expired, next) = state.withLock { s -> (Bool, [RunningJob], ContinuousClock.Instant) in
                var expired: [RunningJob] = []
                var next = now + .seconds(1)
                for job in s.running.values {
                    if job.deadline <= now { expired.append(job) } else { next = min(next, job.deadline) }
                }
                s.nextDeadlineCheck = next
                return (s.finished, expired, next)
            }
            if finished { return }
            for job in expired { stopHandler(job, .timedOut(job.leased.job.timeout)) }
            await deadlineBell.wait(timeout: next - now)
        }
    }

    private func heartbeatLoop() async {
        while true {
            await heartbeatBell.wait(timeout: config.heartbeatInterval)
            let (finished, running) = state.withLock { ($0.finished, Array($0.running.values)) }
            if finished { return }
            if running.isEmpty { continue }
            do {
                let lost = try await store.heartbeat(running.map { ($0.id, $0.leased.lease) }, leaseDuration: config.leaseDuration)
                // A job whose outcome is already known may have been completed since the list
                // was taken: resolving it again does nothing.
                for job in running where lost.contains(job.id) && !job.isResolved {
                    logger.warning("lease lost; stopping the job here", metadata: ["job": "\(job.id)"])
                    stopHandler(job, .leaseLost)
                }
            } catch {
                logger.error("heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: One attempt

    /// Runs the handler in a task of its own (not a child task: one that ignores cancellation
    /// must not hold up shutdown), and reports its outcome unless something else ended the
    /// attempt first.
    private func start(_ running: RunningJob) {
        let job = running.leased.job
        let task = Task {
            let outcome: AttemptOutcome
            JobMetrics.pickup(job, startedAt: Date())
            let started = ContinuousClock.now
            defer { JobMetrics.runTime(job, ContinuousClock.now - started) }
            if let handler = spool.handler(for: job.kind) {
                let context = JobContext(job: job, lease: running.leased.lease, parents: running.leased.parents, store: store, logger: logger)
                do {
                    outcome = .succeeded(try await handler.run(job.payload, context))
                } catch {
                    outcome = .failed(error)
                }
            } else {
                outcome = .failed(NoHandler(kind: job.kind))
            }
            if running.resolve() { await finish(running, outcome) }
        }
        running.attach(task)
    }

    /// Ends an attempt from outside its handler: timeout, cancellation, lost lease, shutdown.
    private func stopHandler(_ running: RunningJob, _ outcome: AttemptOutcome) {
        guard running.resolve() else { return }
        running.cancelHandler()
        Task { await finish(running, outcome) }
    }

    /// Frees the job's slot, records the outcome and forgets the job.
    private func finish(_ running: RunningJob, _ outcome: AttemptOutcome) async {
        state.withLock { s in
            s.busySlots -= 1
            s.reporting += 1
        }
        bell.ring()
        await report(outcome, for: running.leased)
        state.withLock { s in
            s.reporting -= 1
            // Only this attempt: a newer one of the same job may have replaced it.
            if s.running[running.id] === running { s.running.removeValue(forKey: running.id) }
        }
        bell.ring()
    }

    struct NoHandler: Error, CustomStringConvertible {
        var kind: String
        var description: String { "no handler registered for kind '\(kind)' in this worker" }
    }

    private func report(_ outcome: AttemptOutcome, for leased: LeasedJob) async {
        let job = leased.job
        do {
            switch outcome {
            case .succeeded(let result):
                do {
                    try await withStoreRetries { try await self.store.complete(job.id, lease: leased.lease, result: result) }
                    JobMetrics.finished(job, outcome: "completed")
                    spool.statistics.record(.completed, job: job)
                } catch SpoolError.invalid(let field, let why) {
                    // A result the store refuses (not JSON, too large) fails this attempt for good.
                    try await recordFailure(leased, message: "the handler's \(field) \(why)", reason: "non_retryable", retryAfter: nil)
                }
            case .failed(let handoff as HandedOff):
                // The lease now lasts until the job's deadline; the reporter holds its token.
                let remaining = Duration.seconds(fractional: max(1, handoff.until.timeIntervalSinceNow))
                try await withStoreRetries { _ = try await self.store.heartbeat([(job.id, leased.lease)], leaseDuration: remaining) }
                JobMetrics.finished(job, outcome: "handed_off")
            case .failed(let error):
                try await recordFailure(leased, message: "\(error)", reason: reason(of: error), retryAfter: retryDelay(of: error))
            case .timedOut(let limit):
                try await recordFailure(leased, message: "attempt timed out after \(limit.seconds)s", reason: "timeout", retryAfter: nil)
            case .shutdown:
                try await withStoreRetries { try await self.store.release(job.id, lease: leased.lease) }
                JobMetrics.finished(job, outcome: "released")
            case .cancelled:
                JobMetrics.finished(job, outcome: "cancelled")
            case .leaseLost:
                JobMetrics.finished(job, outcome: "lease_lost")
            }
        } catch SpoolError.leaseLost {
            logger.warning("outcome rejected: this worker no longer holds the lease", metadata: ["job": "\(job.id)"])
        } catch {
            logger.error("could not record outcome; the lease will expire and the job run again", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
    }

    private func reason(of error: any Error) -> String {
        switch error {
        case JobFailure.nonRetryable: "non_retryable"
        case is AttemptTimedOut: "timeout"
        case is NoHandler: "no_handler"
        default: "error"
        }
    }

    private func retryDelay(of error: any Error) -> Duration? {
        if case let JobFailure.retry(_, after) = error { return after }
        return nil
    }

    private func recordFailure(_ leased: LeasedJob, message: String, reason: String, retryAfter: Duration?) async throws {
        let job = leased.job
        let now = Date()
        let error = AttemptError(attempt: job.attempt, message: String(message.prefix(RetryPlan.maxMessageLength)), at: now, reason: reason,
                                 worker: config.workerID)
        let retryAt = RetryPlan.retryAt(attempt: job.attempt, maxAttempts: job.maxAttempts, retryable: reason != "non_retryable",
                                        retryAfter: retryAfter, backoff: settings.backoff, now: now)
        try await withStoreRetries { try await self.store.fail(job.id, lease: leased.lease, error: error, retryAt: retryAt) }
        spool.statistics.record(retryAt == nil ? .failed : .retried, job: job, at: now)
        JobMetrics.finished(job, outcome: retryAt == nil ? "failed" : "retried")
        if retryAt == nil {
            logger.warning("job failed for good", metadata: ["job": "\(job.id)", "attempt": "\(job.attempt)", "error": "\(message)"])
        } else {
            logger.info("attempt failed; will retry", metadata: ["job": "\(job.id)", "attempt": "\(job.attempt)", "error": "\(message)"])
        }
    }

    /// Retries a store call that failed because the store was unavailable, for up to about
    /// a lease duration (after that the lease is gone and the job will run again anyway).
    private func withStoreRetries(_ body: @Sendable () async throws -> Void) async throws {
        var delay = Duration.milliseconds(50)
        let deadline = ContinuousClock.now + config.leaseDuration
        while true {
            do { return try await body() } catch SpoolError.unavailable(let reason) {
                if ContinuousClock.now + delay > deadline { throw SpoolError.unavailable(reason: reason) }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }
}
