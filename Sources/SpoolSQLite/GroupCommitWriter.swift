import GRDB
import SpoolCore
import Synchronization

/// Collects the writes that arrive while a transaction is being committed and commits them
/// together in the next one (group commit). One fsync then covers many enqueues and
/// completions, so durability does not cost throughput.
///
/// Each write runs in its own savepoint: one that throws is rolled back alone and its caller
/// gets the error, while the others in the batch commit. Callers hear back only after the
/// commit, so a success is always durable.
final class GroupCommitWriter: Sendable {
    /// Changes a batch made, announced after its commit.
    final class Batch {
        var signals: Set<StoreSignals.Signal> = []
        func signal(_ s: StoreSignals.Signal) { signals.insert(s) }
    }

    private struct Op: Sendable {
        /// Needs the configured sync level; other writes (leases, heartbeats) may skip the
        /// fsync because losing them on power loss only makes a job run again.
        let durable: Bool
        let run: @Sendable (Database, Batch) -> (@Sendable () -> Void)
        let fail: @Sendable (any Error) -> Void
    }

    private struct State {
        var queued: [Op] = []
        var flushing = false
        var syncLevel: String?
    }

    private let pool: DatabasePool
    private let durableSync: String
    private let signals: StoreSignals
    private let state = Mutex(State())
    /// The most writes committed in one transaction.
    private let maxBatch = 4096

    init(pool: DatabasePool, durableSync: String, signals: StoreSignals) {
        self.pool = pool
        self.durableSync = durableSync
        self.signals = signals
    }

    /// Runs `body` in the next group transaction and returns its result once committed.
    func write<T: Sendable>(durable: Bool = true, _ body: @escaping @Sendable (Database, Batch) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let op = Op(
                durable: durable,
                run: { db, batch in
                    do {
                        var value: T?
                        try db.inSavepoint {
                            value = try body(db, batch)
                            return .commit
                        }
                        let result = value!
                        return { continuation.resume(returning: result) }
                    } catch {
                        let mapped = SQLiteJobStore.map(error)
                        return { continuation.resume(throwing: mapped) }
                    }
                },
                fail: { continuation.resume(throwing: $0) })
            let startFlushing = state.withLock { s in
                s.queued.append(op)
                if s.flushing { return false }
                s.flushing = true
                return true
            }
            if startFlushing {
                Task.detached { await self.flush() }
            }
        }
    }

    private func flush() async {
        while true {
            let batch: [Op] = state.withLock { s in
                let n = min(s.queued.count, maxBatch)
                let b = Array(s.queued.prefix(n))
                s.queued.removeFirst(n)
                if b.isEmpty { s.flushing = false }
                return b
            }
            if batch.isEmpty { return }
            let sync = batch.contains(where: \.durable) ? durableSync : "NORMAL"
            do {
                let (deliveries, raised) = try await pool.writeWithoutTransaction { db in
                    try self.setSync(sync, db)
                    let group = Batch()
                    var deliveries: [@Sendable () -> Void] = []
                    deliveries.reserveCapacity(batch.count)
                    try db.inTransaction(.immediate) {
                        for op in batch { deliveries.append(op.run(db, group)) }
                        return .commit
                    }
                    return (deliveries, group.signals)
                }
                for deliver in deliveries { deliver() }
                for signal in raised { signals.send(signal) }
            } catch {
                let mapped = SQLiteJobStore.map(error)
                for op in batch { op.fail(mapped) }
            }
        }
    }

    /// Forgets the sync level set last, after something else changed it on the connection.
    func forgetSyncLevel() { state.withLock { $0.syncLevel = nil } }

    /// `PRAGMA synchronous` applies per connection and cannot change inside a transaction, so
    /// it is set between transactions, only when it differs from the last one.
    private func setSync(_ level: String, _ db: Database) throws {
        let changed = state.withLock { s in
            if s.syncLevel == level { return false }
            s.syncLevel = level
            return true
        }
        if changed { try db.execute(sql: "PRAGMA synchronous = \(level)") }
    }
}
