import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// A service that runs workers for a set of queues, and the duties that keep the store
/// healthy: returning jobs whose lease expired, and pruning old finished jobs.
///
/// Run it in a `ServiceGroup`: on SIGTERM or SIGINT it stops leasing, lets running jobs finish
/// within ``EngineConfiguration/shutdownGracePeriod``, and gives the rest back to the queue at
/// once (no waiting for their leases to expire).
public final class SpoolWorker: Service, Sendable {
    public let queues: [String]
    private let spool: Spool
    private let workers: [String: QueueWorker]
    private let maintenanceBell = Doorbell()
    private let stopped = Mutex(false)

    init(spool: Spool, queues: [String]) {
        self.spool = spool
        self.queues = queues
        self.workers = Dictionary(uniqueKeysWithValues: queues.map { ($0, QueueWorker(queue: $0, spool: spool)) })
    }

    public func run() async throws {
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
                    group.addTask { await self.maintenanceLoop() }
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
        spool.logger.info("workers stopped")
    }

    /// Stops leasing; ``run()`` returns once running jobs have finished or been given back.
    public func stop() {
        stopped.withLock { $0 = true }
        for worker in workers.values { worker.stop() }
        maintenanceBell.ring()
    }

    /// Jobs running in this process right now.
    public var runningCount: Int { workers.values.reduce(0) { $0 + $1.runningCount } }

    private func maintenanceLoop() async {
        let config = spool.configuration
        var lastPrune = ContinuousClock.now - .seconds(3600)
        while !stopped.withLock({ $0 }) {
            do {
                // One process of the cluster does this; the claim lasts three rounds, so a
                // leader that dies is replaced within that.
                guard try await spool.store.claimLeadership(of: "maintenance", holder: config.workerID, for: config.maintenanceInterval * 3) else {
                    await maintenanceBell.wait(timeout: config.maintenanceInterval)
                    continue
                }
                var rescued = 0
                for _ in 0..<100 {  // bounded: calls return at most LeaseRescue.batchLimit each
                    let n = try await spool.store.rescueExpiredLeases()
                    rescued += n
                    if n < LeaseRescue.batchLimit { break }
                }
                if rescued > 0 { spool.logger.warning("rescued jobs whose lease expired", metadata: ["count": "\(rescued)"]) }
                if ContinuousClock.now - lastPrune >= config.pruneInterval {
                    lastPrune = ContinuousClock.now
                    let now = Date()
                    let completedBefore = config.completedRetention.map { now.addingTimeInterval(-$0.seconds) }
                    let failedBefore = config.failedRetention.map { now.addingTimeInterval(-$0.seconds) }
                    var pruned = 0
                    for _ in 0..<100 {  // bounded: at most 100k rows per round
                        let n = try await spool.store.prune(completedBefore: completedBefore, failedBefore: failedBefore, limit: 1000)
                        pruned += n
                        if n < 1000 { break }
                    }
                    if pruned > 0 { spool.logger.info("pruned finished jobs", metadata: ["count": "\(pruned)"]) }
                    let eventsBefore = now.addingTimeInterval(-config.eventRetention.seconds)
                    for _ in 0..<100 {  // bounded, like the jobs above
                        if try await spool.store.pruneEvents(before: eventsBefore, limit: 5000) < 5000 { break }
                    }
                }
            } catch {
                spool.logger.error("maintenance failed", metadata: ["error": "\(error)"])
            }
            await maintenanceBell.wait(timeout: config.maintenanceInterval)
        }
    }
}
