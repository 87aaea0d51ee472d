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
    /// A batch whose write failed, kept with its id and tries: written again as it was, so
    /// that a write that timed out but committed is not counted twice (the store ignores a
    /// batch id it has). After ``maxTries`` it is dropped, so that a store that keeps refusing
    /// it cannot stop the figures that follow.
    private let unwritten = Mutex<(id: String, rows: [QueueMinute], tries: Int)?>(nil)
    static let maxTries = 5

    public init(store: any JobStore, statistics: QueueStatistics, writer: String, logger: Logger) {
        self.store = store; self.statistics = statistics; self.writer = writer; self.logger = logger
    }

    /// Writes a batch that failed before, then what was counted since the last call. Returns
    /// how many rows were written.
    @discardableResult
    public func flush() async -> Int {
        var written = 0
        for _ in 0..<2 {
            let batch: (id: String, rows: [QueueMinute], tries: Int)? = unwritten.withLock { pending in
                if let failed = pending {
                    pending = nil  // taken: a concurrent flush does not write it too
                    return failed
                }
                let rows = statistics.take()
                return rows.isEmpty ? nil : (UUID().uuidString.lowercased(), rows, 0)
            }
            guard let batch else { break }
            do {
                try await store.recordQueueMinutes(batch.rows, writer: writer, batch: batch.id)
                written += batch.rows.count
            } catch {
                if batch.tries + 1 >= Self.maxTries {
                    logger.error("dropped queue statistics the store refused \(Self.maxTries) times", metadata: [
                        "rows": "\(batch.rows.count)", "error": "\(error)"])
                } else {
                    unwritten.withLock { pending in if pending == nil { pending = (batch.id, batch.rows, batch.tries + 1) } }
                    logger.warning("could not write queue statistics; will try again", metadata: ["error": "\(error)"])
                }
                break
            }
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
