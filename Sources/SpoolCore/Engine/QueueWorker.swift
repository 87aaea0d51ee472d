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

    private struct State {
        var running: [JobID: RunningJob] = [:]
        var stopping = false
        var finished = false
        /// Whether a lease may find something; cleared when a lease comes back short, set
        /// again by a wake-up or a poll.
        var mayHaveWork = true
        /// Counts wake-ups, so one that arrives during a lease is not lost.
        var wakeups = 0
        var nextRunAt: Date?
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
            job.resolve(.cancelled)
        }
    }

    var runningCount: Int { state.withLock { $0.running.count } }

    /// Runs until ``stop()``, then lets running jobs finish within the grace period and gives
    /// the rest back to the queue.
    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.heartbeatLoop() }
            await leaseLoop(&group)
            await drain()
            state.withLock { $0.finished = true }
            heartbeatBell.ring()
        }
    }

    private func leaseLoop(_ group: inout DiscardingTaskGroup) async {
        var failures = 0
        while true {
            let (stopping, free, mayHaveWork, wakeups) = state.withLock { s in
                (s.stopping, settings.concurrency - s.running.count, s.mayHaveWork, s.wakeups)
            }
            if stopping { return }
            if free > 0 && mayHaveWork {
                let want = min(free, config.leaseBatchSize)
                do {
                    let batch = try await store.lease(queue: queue, limit: want, workerID: config.workerID, leaseDuration: config.leaseDuration)
                    failures = 0
                    let running = batch.jobs.map(RunningJob.init)
                    state.withLock { s in
                        for job in running { s.running[job.id] = job }
                        s.nextRunAt = batch.nextRunAt
                        if batch.jobs.count < want && s.wakeups == wakeups { s.mayHaveWork = false }
                    }
                    for job in running { group.addTask { await self.execute(job) } }
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
        let left = state.withLock { Array($0.running.values) }
        if !left.isEmpty {
            logger.warning("grace period over: giving running jobs back to the queue", metadata: ["count": "\(left.count)"])
        }
        for job in left { job.resolve(.shutdown) }
        while runningCount > 0 { await bell.wait(timeout: .milliseconds(50)) }
    }

    private func heartbeatLoop() async {
        while true {
            await heartbeatBell.wait(timeout: config.heartbeatInterval)
            let (finished, running) = state.withLock { ($0.finished, Array($0.running.values)) }
            if finished { return }
            if running.isEmpty { continue }
            do {
                let lost = try await store.heartbeat(running.map { ($0.id, $0.leased.lease) }, leaseDuration: config.leaseDuration)
                for job in running where lost.contains(job.id) {
                    logger.warning("lease lost; stopping the job here", metadata: ["job": "\(job.id)"])
                    job.resolve(.leaseLost)
                }
            } catch {
                logger.error("heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: One attempt

    private func execute(_ running: RunningJob) async {
        let job = running.leased.job
        let started = ContinuousClock.now
        if let handler = spool.handler(for: job.kind) {
            let context = JobContext(job: job, lease: running.leased.lease, store: store, logger: logger)
            let task = Task {
                do {
                    let result = try await handler.run(job.payload, context)
                    running.resolve(.succeeded(result), cancelHandler: false)
                } catch {
                    running.resolve(.failed(error), cancelHandler: false)
                }
            }
            running.attach(task)
            let timeout = job.timeout
            let timer = Task {
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled { running.resolve(.timedOut(timeout)) }
            }
            let outcome = await running.outcome()
            timer.cancel()
            await report(outcome, for: running.leased, elapsed: ContinuousClock.now - started)
        } else {
            await report(.failed(NoHandler(kind: job.kind)), for: running.leased, elapsed: .zero)
        }
        state.withLock { _ = $0.running.removeValue(forKey: job.id) }
        bell.ring()
    }

    struct NoHandler: Error, CustomStringConvertible {
        var kind: String
        var description: String { "no handler registered for kind '\(kind)' in this worker" }
    }

    private func report(_ outcome: AttemptOutcome, for leased: LeasedJob, elapsed: Duration) async {
        let job = leased.job
        do {
            switch outcome {
            case .succeeded(let result):
                try await withStoreRetries { try await self.store.complete(job.id, lease: leased.lease, result: result) }
                logger.debug("job completed", metadata: ["job": "\(job.id)", "elapsed": "\(elapsed)"])
            case .failed(let error):
                try await recordFailure(leased, message: "\(error)", reason: reason(of: error), retryAfter: retryDelay(of: error))
            case .timedOut(let limit):
                try await recordFailure(leased, message: "attempt timed out after \(limit.seconds)s", reason: "timeout", retryAfter: nil)
            case .shutdown:
                try await withStoreRetries { try await self.store.release(job.id, lease: leased.lease) }
            case .cancelled, .leaseLost:
                break
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
        let error = AttemptError(attempt: job.attempt, message: String(message.prefix(8192)), at: now, reason: reason)
        let retryAt: Date? = if reason != "non_retryable" && job.attempt < job.maxAttempts {
            now.addingTimeInterval((retryAfter ?? settings.backoff.delay(afterFailures: job.attempt)).seconds)
        } else {
            nil
        }
        try await withStoreRetries { try await self.store.fail(job.id, lease: leased.lease, error: error, retryAt: retryAt) }
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
