import Foundation
import Logging

/// Writes this process's per-minute figures (``QueueStatistics``) to the store once a
/// minute (what was counted since the last write: a minute may end up in two rows, which
/// readers add up) and once more when the process stops. Every process runs one (the figures
/// are its own); the elected process prunes old minutes (``Maintenance``).
public struct StatsFlusher: Sendable {
    let store: any JobStore
    let statistics: QueueStatistics
    let writer: String
    let logger: Logger

    public init(store: any JobStore, statistics: QueueStatistics, writer: String, logger: Logger) {
        self.store = store; self.statistics = statistics; self.writer = writer; self.logger = logger
    }

    /// Writes what was counted since the last call. A failed write keeps the rows for the next.
    @discardableResult
    public func flush() async -> Int {
        let rows = statistics.take()
        guard !rows.isEmpty else { return 0 }
        do {
            try await store.recordQueueMinutes(rows, writer: writer)
            return rows.count
        } catch {
            statistics.restore(rows)
            logger.warning("could not write queue statistics; will try again", metadata: ["error": "\(error)"])
            return 0
        }
    }

    /// Flushes every `interval` until `stopped()`, then once more with everything.
    func run(interval: Duration, wait: @Sendable (Duration) async -> Void, stopped: @Sendable () -> Bool) async {
        while !stopped() {
            await wait(interval)
            if !stopped() { await flush() }
        }
        await flush()
    }
}
