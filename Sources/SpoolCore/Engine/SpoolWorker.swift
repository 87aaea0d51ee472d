import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// A service that runs workers for a set of queues, and (on the process elected for it) the
/// duties that keep the store healthy: see ``Maintenance``.
///
/// Run it in a `ServiceGroup`: on SIGTERM or SIGINT it stops leasing, lets running jobs finish
/// within ``EngineConfiguration/shutdownGracePeriod``, and gives the rest back to the queue at
/// once (no waiting for their leases to expire).
public final class SpoolWorker: Service, Sendable {
    public let queues: [String]
    private let spool: Spool
    private let workers: [String: QueueWorker]
    private let maintenance: Maintenance
    private let registration: WorkerRegistration
    private let statisticsWriter: StatisticsWriter
    private let stopped = Mutex(false)

    init(spool: Spool, queues: [String]) {
        self.spool = spool
        self.queues = queues
        let workers = Dictionary(uniqueKeysWithValues: queues.map { ($0, QueueWorker(queue: $0, spool: spool)) })
        self.workers = workers
        self.maintenance = Maintenance(store: spool.store, configuration: spool.configuration, logger: spool.logger)
        self.statisticsWriter = StatisticsWriter(spool: spool)
        let startedAt = Date()
        self.registration = WorkerRegistration(store: spool.store, configuration: spool.configuration, logger: spool.logger) { [spool] now in
            WorkerRegistration.info(configuration: spool.configuration, queues: queues, kinds: spool.registeredKinds,
                                    running: workers.values.reduce(0) { $0 + $1.runningCount }, startedAt: startedAt, now: now)
        }
    }

    public func run() async throws {
        spool.store.startBackgroundDuties()
        let token = spool.store.signals.addListener { [workers] signal in
            switch signal {
            case .workAvailable(let queue), .queueResumed(let queue):
                workers[queue]?.wake()
            case .jobCancelled(let id):
                for worker in workers.values { worker.cancelRunning(id) }
            }
        }
        defer { spool.store.signals.removeListener(token) }
        spool.logger.info("workers started", metadata: [
            "queues": "\(queues.map { "\($0)×\(spool.configuration.queue($0).concurrency)" }.joined(separator: ","))",
            "worker_id": "\(spool.configuration.workerID)",
        ])
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await withDiscardingTaskGroup { group in
                    group.addTask { await self.maintenance.run { self.stopped.withLock { $0 } } }
                    group.addTask { await self.registration.run { self.stopped.withLock { $0 } } }
                    group.addTask { await self.statisticsWriter.runUntilStopped() }
                    for worker in workers.values {
                        group.addTask { await worker.run() }
                    }
                }
            } onCancel: {
                self.stop()
            }
        } onGracefulShutdown: {
            self.stop()
        }
        // Jobs that finished during the grace period, after the writer's last round.
        await statisticsWriter.flush()
        await registration.remove()
        spool.logger.info("workers stopped")
    }

    /// Stops leasing; ``run()`` returns once running jobs have finished or been given back.
    public func stop() {
        stopped.withLock { $0 = true }
        for worker in workers.values { worker.stop() }
        maintenance.wake()
        registration.wake()
        statisticsWriter.stop()
    }

    /// Jobs running in this process right now.
    public var runningCount: Int { workers.values.reduce(0) { $0 + $1.runningCount } }
}
