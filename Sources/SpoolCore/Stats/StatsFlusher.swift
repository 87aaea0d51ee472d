import Foundation
import Logging
import Synchronization

/// Writes this process's per-minute figures (``QueueStatistics``) to the store once a
/// minute (what was counted since the last write: a minute may end up in two rows, which
/// readers add up) and once more when the process stops. Every process runs one (the figures
/// are its own); the elected process prunes old minutes (``Maintenance``).
public final class StatsFlusher: Sendable {
    let store: any JobStore
    let statistics: QueueStatistics
    let writer: String
    let logger: Logger
    /// A batch whose write failed, kept with its id: written again as it was, so that a write
    /// that timed out but committed is not counted twice (the store ignores a batch id it has).
    private let unwritten = Mutex<(id: String, rows: [QueueMinute])?>(nil)

    public init(store: any JobStore, statistics: QueueStatistics, writer: String, logger: Logger) {
        self.store = store; self.statistics = statistics; self.writer = writer; self.logger = logger
    }

    /// Writes what was counted since the last call (after a batch that failed before). Returns
    /// how many rows were written.
    @discardableResult
    public func flush() async -> Int {
        var written = 0
        for attempt in 0..<2 {
            let batch: (id: String, rows: [QueueMinute])? = unwritten.withLock { pending in
                if let failed = pending { return failed }
                let rows = statistics.take()
                return rows.isEmpty ? nil : (UUID().uuidString.lowercased(), rows)
            }
            guard let batch else { break }
            do {
                try await store.recordQueueMinutes(batch.rows, writer: writer, batch: batch.id)
                unwritten.withLock { $0 = nil }
                written += batch.rows.count
            } catch {
                unwritten.withLock { $0 = batch }
                logger.warning("could not write queue statistics; will try again", metadata: ["error": "\(error)"])
                break
            }
            _ = attempt  // a second round writes what was counted while a retried batch was written
        }
        return written
    }

    /// Flushes every `interval` until `stopped()`, then once more.
    func run(interval: Duration, wait: @Sendable (Duration) async -> Void, stopped: @Sendable () -> Bool) async {
        while !stopped() {
            await wait(interval)
            if !stopped() { await flush() }
        }
        await flush()
    }
}
