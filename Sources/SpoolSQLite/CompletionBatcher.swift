import Foundation
import GRDB
import SpoolCore
import Synchronization

/// Completions are the most frequent write. Those that arrive while a commit is under way are
/// written by one `UPDATE ... FROM (VALUES ...)` statement in the next transaction, instead of
/// one statement each; the lease token is still checked row by row (fencing).
final class CompletionBatcher: Sendable {
    private struct Pending: Sendable {
        var id: JobID
        var lease: LeaseToken
        var result: String?
        var continuation: CheckedContinuation<Void, any Error>
    }

    private let writer: GroupCommitWriter
    private let pending = Mutex<[Pending]>([])
    /// What the write under way took from `pending`, to fail them if its transaction fails.
    private let inFlight = Mutex<[Pending]>([])
    /// Rows per statement (3 variables each, well under SQLite's limit).
    private let chunk = 500

    init(writer: GroupCommitWriter) { self.writer = writer }

    func complete(_ id: JobID, lease: LeaseToken, result: Data?) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let item = Pending(id: id, lease: lease, result: result.map { String(decoding: $0, as: UTF8.self) }, continuation: continuation)
            let first = pending.withLock { list in
                list.append(item)
                return list.count == 1
            }
            // The first completion of a group queues one write; it takes every completion that
            // has arrived by the time the writer gets to it.
            if first { Task { await self.flush() } }
        }
    }

    private func flush() async {
        do {
            let outcomes = try await writer.write(atomic: true) { db, batch -> [(Pending, Bool)] in
                let items = self.pending.withLock { list in
                    defer { list.removeAll(keepingCapacity: true) }
                    return list
                }
                self.inFlight.withLock { $0 = items }
                let now = Rows.micros(Date())
                var done = Set<JobID>()
                var start = 0
                while start < items.count {
                    let slice = items[start..<min(start + self.chunk, items.count)]
                    start += slice.count
                    let values = Array(repeating: "(?, ?, ?)", count: slice.count).joined(separator: ", ")
                    var arguments: StatementArguments = [now]
                    for item in slice { arguments += [item.id.description, item.lease.value, item.result] }
                    let rows = try Row.fetchAll(
                        db.cachedStatement(sql: """
                            UPDATE jobs SET state = 'completed', result = v.column3, finished_at = ?,
                                            lease_token = NULL, lease_expires_at = NULL
                            FROM (VALUES \(values)) AS v
                            WHERE jobs.id = v.column1 AND jobs.state = 'processing' AND jobs.lease_token = v.column2
                            RETURNING jobs.id, jobs.queue, jobs.tenant
                            """),
                        arguments: arguments)
                    for row in rows {
                        if let id = JobID(row[0] as String) { done.insert(id) }
                        batch.move(queue: row[1], tenant: row[2], from: .processing, to: .completed)
                    }
                }
                return items.map { ($0, done.contains($0.id)) }
            }
            inFlight.withLock { $0 = [] }
            for (item, ok) in outcomes {
                if ok { item.continuation.resume() } else { item.continuation.resume(throwing: SpoolError.leaseLost(item.id)) }
            }
        } catch {
            // Nothing was written. Fail what the write took or, if it never ran, what waits.
            var failed = inFlight.withLock { list in
                defer { list = [] }
                return list
            }
            if failed.isEmpty {
                failed = pending.withLock { list in
                    defer { list.removeAll() }
                    return list
                }
            }
            for item in failed { item.continuation.resume(throwing: error) }
        }
    }
}
