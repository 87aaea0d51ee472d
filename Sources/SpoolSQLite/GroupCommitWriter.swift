import Foundation
import GRDB
import SpoolCore

/// Collects the writes that arrive while a transaction is being committed and commits them
/// together in the next one (group commit). One fsync then covers many enqueues and
/// completions, so durability does not cost throughput.
///
/// Writes run on one dedicated thread, not on Swift's cooperative pool: under load the pool is
/// busy with workers and producers, and a commit loop that had to wait its turn there after every
/// transaction would leave the database idle.
///
/// A write that may change several rows runs in its own savepoint: if it throws, it is rolled
/// back alone and its caller gets the error, while the others in the batch commit. Callers hear
/// back only after the commit, so a success is always durable.
final class GroupCommitWriter: @unchecked Sendable {
    /// The changes of one group transaction (the core's ``ChangeSet``), written once per commit.
    typealias Batch = ChangeSet

    private struct Op {
        /// Needs the configured sync level; other writes (leases, heartbeats) may skip the
        /// fsync because losing them on power loss only makes a job run again.
        let durable: Bool
        let run: (Database, Batch) -> (() -> Void)
        let fail: (any Error) -> Void
    }

    private let pool: DatabasePool
    private let durableSync: String
    private let signals: StoreSignals
    /// Guards `queued` and `closed`.
    private let condition = NSCondition()
    private var queued: [Op] = []
    private var closed = false
    private let finished = DispatchSemaphore(value: 0)
    /// The sync level set last on the writer connection; touched by the writer thread only.
    private var syncLevel: String?
    /// The most writes committed in one transaction.
    private let maxBatch = 4096

    init(pool: DatabasePool, durableSync: String, signals: StoreSignals) {
        self.pool = pool
        self.durableSync = durableSync
        self.signals = signals
        let thread = Thread { [self] in self.loop() }
        thread.name = "spool-sqlite-writer"
        thread.start()
    }

    /// Runs `body` in the next group transaction and returns its result once committed.
    /// Set `atomic` only for a body that writes with a single SQL statement (reads before it are
    /// fine) and records its counts and events after that statement: it then needs no savepoint.
    func write<T: Sendable>(durable: Bool = true, atomic: Bool = false, _ body: @escaping @Sendable (Database, Batch) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let op = Op(
                durable: durable,
                run: { db, batch in
                    let countsBefore = batch.counts
                    let eventsBefore = batch.events.count
                    let signalsBefore = batch.signals
                    do {
                        // SQLite rolls a whole transaction back on some errors (disk full, I/O):
                        // what follows must not run, and commit, on its own.
                        guard db.isInsideTransaction else {
                            throw SpoolError.unavailable(reason: "the transaction was rolled back by SQLite")
                        }
                        let result: T
                        if atomic {
                            result = try body(db, batch)
                        } else {
                            var value: T?
                            try db.inSavepoint {
                                value = try body(db, batch)
                                return .commit
                            }
                            result = value!
                        }
                        return { continuation.resume(returning: result) }
                    } catch {
                        batch.counts = countsBefore  // the op's rows were rolled back
                        batch.events.removeLast(batch.events.count - eventsBefore)
                        batch.signals = signalsBefore  // (a cancel signal for a job whose cancel rolled back would stop it)
                        let mapped = SQLiteJobStore.map(error)
                        return { continuation.resume(throwing: mapped) }
                    }
                },
                fail: { continuation.resume(throwing: $0) })
            condition.lock()
            if closed {
                condition.unlock()
                continuation.resume(throwing: SpoolError.unavailable(reason: "the store is closed"))
                return
            }
            queued.append(op)
            condition.signal()
            condition.unlock()
        }
    }

    /// Commits what is queued, then stops the writer thread.
    func close() {
        condition.lock()
        let wasOpen = !closed
        closed = true
        condition.signal()
        condition.unlock()
        if wasOpen { finished.wait() }
    }

    private func loop() {
        while true {
            condition.lock()
            while queued.isEmpty && !closed { condition.wait() }
            if queued.isEmpty {
                condition.unlock()
                finished.signal()
                return
            }
            let n = min(queued.count, maxBatch)
            let batch = Array(queued.prefix(n))
            queued.removeFirst(n)
            condition.unlock()
            commit(batch)
        }
    }

    private func commit(_ batch: [Op]) {
        let sync = batch.contains(where: \.durable) ? durableSync : "NORMAL"
        let group = Batch()
        var deliveries: [() -> Void] = []
        deliveries.reserveCapacity(batch.count)
        do {
            try pool.writeWithoutTransaction { db in
                // `PRAGMA synchronous` applies per connection and cannot change inside a
                // transaction, so it is set between transactions, only when it changes.
                if syncLevel != sync {
                    try db.execute(sql: "PRAGMA synchronous = \(sync)")
                    syncLevel = sync
                }
                try db.inTransaction(.immediate) {
                    for op in batch { deliveries.append(op.run(db, group)) }
                    try group.writeCounts(db)
                    try group.writeEvents(db)
                    return .commit
                }
            }
        } catch {
            let mapped = SQLiteJobStore.map(error)
            for op in batch { op.fail(mapped) }
            return
        }
        for deliver in deliveries { deliver() }
        for signal in group.signals { signals.send(signal) }
        if !group.events.isEmpty { signals.send(events: group.events) }
    }
}

/// Writing a transaction's changes to SQLite.
extension ChangeSet {
    func writeCounts(_ db: Database) throws {
        let upsert = try db.cachedStatement(sql: """
            INSERT INTO queue_counts(queue, tenant, state, n) VALUES (?, ?, ?, ?)
            ON CONFLICT(queue, tenant, state) DO UPDATE SET n = n + excluded.n
            """)
        for (key, n) in counts where n != 0 {
            try upsert.execute(arguments: [key.queue, key.tenant, key.state.rawValue, n])
        }
    }

    /// Appends the transaction's events to the event log as one row (or one per 65,536
    /// events) and numbers them.
    func writeEvents(_ db: Database) throws {
        let now = Rows.micros(Date())
        var index = 0
        while index < events.count {
            let end = min(index + EventLogFormat.perRow, events.count)
            let text = EventLogFormat.encode(events[index..<end])
            let row = try Int64.fetchOne(
                db.cachedStatement(sql: "INSERT INTO event_log (count, at, events) VALUES (?, ?, ?) RETURNING seq"),
                arguments: [end - index, now, text]) ?? 0
            for n in index..<end { events[n].seq = EventLogFormat.seq(row: row, index: n - index) }
            index = end
        }
    }
}
