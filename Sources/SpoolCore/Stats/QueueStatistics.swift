import Foundation
import Synchronization

/// This process's figures per queue and minute, added up in memory as attempts end (a few
/// dictionary updates, no I/O on the hot path) and taken by ``StatsFlusher`` once a minute.
public final class QueueStatistics: Sendable {
    public enum Outcome: Sendable { case completed, failed, retried }

    private struct Key: Hashable { var tenant: String; var queue: String; var minute: Int64 }
    private let table = Mutex<[Key: QueueMinute]>([:])
    /// Past this many open rows new figures are dropped (a flood of queues cannot grow memory
    /// while the store is down); 10,000 rows is 10,000 queue-tenant pairs in one minute.
    static let limit = 10_000

    public init() {}

    /// Counts one attempt's end. `wait`: from run-at to start; `run`: how long it ran.
    public func record(_ outcome: Outcome, tenant: String, queue: String, wait: TimeInterval?, run: TimeInterval?, at now: Date = Date()) {
        let key = Key(tenant: tenant, queue: queue, minute: QueueMinute.minute(of: now))
        table.withLock { rows in
            guard rows[key] != nil || rows.count < Self.limit else { return }
            var row = rows[key] ?? QueueMinute(tenant: tenant, queue: queue, minute: key.minute)
            switch outcome {
            case .completed: row.completed += 1
            case .failed: row.failed += 1
            case .retried: row.retried += 1
            }
            if let wait { row.wait.add(milliseconds: max(0, wait * 1000)) }
            if let run { row.run.add(milliseconds: max(0, run * 1000)) }
            rows[key] = row
        }
    }

    /// Counts a job's attempt from its timestamps (`startedAt`, `runAt`).
    public func record(_ outcome: Outcome, job: Job, at now: Date = Date()) {
        let wait = job.startedAt.map { $0.timeIntervalSince(job.runAt) }
        let run = job.startedAt.map { now.timeIntervalSince($0) }
        record(outcome, tenant: job.tenant, queue: job.queue, wait: wait, run: run, at: now)
    }

    /// Takes every row counted so far (the table starts over).
    public func take() -> [QueueMinute] {
        table.withLock { rows in
            defer { rows.removeAll(keepingCapacity: true) }
            return Array(rows.values)
        }
    }

    /// The rows not written yet (to merge into a read of the store's).
    public var pending: [QueueMinute] { table.withLock { Array($0.values) } }
}
