import Foundation
import GRDB
import SpoolCore
import Synchronization

extension SQLiteJobStore {
    // MARK: Reads

    public func job(_ id: JobID, tenant: String?) async throws -> Job? {
        try await read { db in
            do { return try Self.fetchJob(db, id, tenant: tenant) } catch SpoolError.notFound { return nil }
        }
    }

    public func list(_ filter: JobFilter) async throws -> JobPage {
        let plan = try ListPlan(filter)
        var conditions = plan.equalities.map { "\($0.column) = ?" }
        var arguments = StatementArguments(plan.equalities.map(\.value))
        if let before = plan.before { conditions.append("seq < ?"); arguments += [before] }
        if let queue = plan.excludedQueue { conditions.append("queue <> ?"); arguments += [queue] }
        if let tag = plan.tag { conditions.append("EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE json_each.value = ?)"); arguments += [tag] }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let sql = "SELECT \(Rows.columns), seq FROM jobs \(whereClause) ORDER BY seq DESC LIMIT \(plan.fetchLimit)"
        let finalArguments = arguments
        return try await read { db in
            let rows = try Row.fetchAll(db, sql: sql, arguments: finalArguments)
            return JobPage(rows: try rows.map { (try Rows.job($0), $0[Rows.columnCount] as Int64) }, plan: plan)
        }
    }

    public func queueStats(tenant: String?) async throws -> [QueueStats] {
        try await read { db in
            var stats: [String: QueueStats] = [:]
            for row in try Row.fetchAll(
                db, sql: "SELECT queue, state, sum(n) AS n FROM queue_counts WHERE ? IS NULL OR tenant = ? GROUP BY queue, state",
                arguments: [tenant, tenant]) {
                let name: String = row["queue"]
                guard let state = JobState(rawValue: row["state"]) else { continue }
                stats[name, default: .empty(name)].counts[state] = row["n"]
            }
            for row in try Row.fetchAll(db, sql: "SELECT name, paused FROM queues") {
                let name: String = row["name"]
                stats[name, default: .empty(name)].paused = row["paused"]
            }
            let now = Date()
            for name in stats.keys where (stats[name]!.counts[.pending] ?? 0) > 0 {
                // Read from the ready index alone (it covers run_at).
                if let oldest = try Int64.fetchOne(
                    db, sql: "SELECT min(run_at) FROM jobs INDEXED BY jobs_ready WHERE queue = ? AND state = 'pending' AND (? IS NULL OR tenant = ?)", arguments: [name, tenant, tenant]) {
                    stats[name]!.oldestPendingAge = .seconds(fractional: max(0, now.timeIntervalSince(Rows.date(oldest))))
                }
            }
            return stats.values.sorted { $0.name < $1.name }
        }
    }

    // MARK: Events

    public func eventPage(after: Int64, filter: EventFilter, limit: Int) async throws -> EventPage {
        let wanted = max(1, min(limit, 10_000))
        let rowLimit = 1000
        return try await read { db in
            var found: [JobEvent] = []
            var next = after
            var rowsRead = 0
            // Rows from the one holding `after` on, at most `rowLimit` per call.
            let rows = try Row.fetchCursor(
                db, sql: "SELECT seq, events FROM event_log WHERE seq >= ? ORDER BY seq LIMIT ?",
                arguments: [EventLogFormat.row(of: after), rowLimit])
            while let row = try rows.next() {
                rowsRead += 1
                let rowSeq: Int64 = row[0]
                for event in EventLogFormat.decode(row: rowSeq, text: row[1]) where event.seq > after && filter.matches(event) {
                    found.append(event)
                    if found.count == wanted { return EventPage(events: found, next: event.seq, atEnd: false) }
                }
                next = max(next, EventLogFormat.seq(row: rowSeq, index: EventLogFormat.perRow - 1))
            }
            return EventPage(events: found, next: next, atEnd: rowsRead < rowLimit)
        }
    }

    public func prunedEventSeq() async throws -> Int64 {
        try await read { db in
            // Row seqs are AUTOINCREMENT from 1 and never reused: rows below the oldest one left
            // were pruned (or, with an empty log, every row ever written was).
            let oldest = try Int64.fetchOne(db, sql: "SELECT min(seq) FROM event_log")
            let ever = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'event_log'") ?? 0
            let prunedRow = oldest.map { $0 - 1 } ?? ever
            return prunedRow > 0 ? EventLogFormat.seq(row: prunedRow, index: EventLogFormat.perRow - 1) : 0
        }
    }

    public func lastEventSeq() async throws -> Int64 {
        try await read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT seq, count FROM event_log ORDER BY seq DESC LIMIT 1") else {
                // Every row was pruned: the newest seq is the last one ever written.
                let ever = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'event_log'") ?? 0
                return ever > 0 ? EventLogFormat.seq(row: ever, index: EventLogFormat.perRow - 1) : 0
            }
            return EventLogFormat.seq(row: row[0], index: (row[1] as Int) - 1)
        }
    }

    public func pruneEvents(before: Date, limit: Int) async throws -> Int {
        try await writer.write(durable: false) { db, _ in
            try db.execute(
                sql: "DELETE FROM event_log WHERE seq IN (SELECT seq FROM event_log WHERE at < ? ORDER BY seq LIMIT ?)",
                arguments: [Rows.micros(before), limit])
            let pruned = db.changesCount
            // Published topic events are kept for the same window.
            try db.execute(
                sql: "DELETE FROM topic_events WHERE id IN (SELECT id FROM topic_events WHERE created_at < ? LIMIT ?)",
                arguments: [Rows.micros(before), limit])
            return pruned
        }
    }
}
