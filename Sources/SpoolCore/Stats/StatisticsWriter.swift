import Foundation
import ServiceLifecycle
import Synchronization

/// The service that writes a process's ``QueueStatistics`` once a minute (and at the end).
/// ``SpoolWorker`` runs one; a process that runs no workers but takes remote workers' results
/// (a gateway alone) runs its own.
public final class StatisticsWriter: Service, Sendable {
    private let flusher: StatsFlusher
    private let interval: Duration
    private let bell = Doorbell()
    private let stopped = Mutex(false)

    public init(spool: Spool) {
        flusher = StatsFlusher(store: spool.store, statistics: spool.statistics, writer: spool.configuration.workerID, logger: spool.logger)
        interval = spool.configuration.statsFlushInterval
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await runUntilStopped()
        } onGracefulShutdown: {
            self.stop()
        }
    }

    func runUntilStopped() async {
        await flusher.run(interval: interval, wait: { [bell] in await bell.wait(timeout: $0) }, stopped: { self.stopped.withLock { $0 } })
    }

    /// Writes what was counted since the last write.
    public func flush() async { await flusher.flush() }

    /// Writes what is left and returns from ``run()``.
    public func stop() {
        stopped.withLock { $0 = true }
        bell.ring()
    }
}
