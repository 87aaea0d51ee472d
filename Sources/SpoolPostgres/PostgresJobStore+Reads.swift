import Foundation
import Logging
import PostgresNIO
import SpoolCore

extension PostgresJobStore {
    // MARK: Reads

    public func job(_ id: JobID, tenant: String?) async throws -> Job? {
        let logger = self.logger
        return try await autocommit { client in
            var found: Job?
            for try await row in try await client.query(
                "SELECT \(unescaped: PGRows.columns()) FROM spool_jobs WHERE id = \(id.uuid)", logger: logger
            ) { found = try PGRows.job(row) }
            if let tenant, found?.tenant != tenant { return nil }
            return found
        }
    }

    public func list(_ filter: JobFilter) async throws -> JobPage {
        let plan = try ListPlan(filter)
        var conditions: [String] = []
        var binds = PostgresBindings()
        for equality in plan.equalities {
            binds.append(equality.value)
            conditions.append("\(equality.column) = $\(binds.count)\(equality.column == "batch_id" ? "::uuid" : "")")
        }
        if let before = plan.before {
            binds.append(before)
            conditions.append("seq < $\(binds.count)")
        }
        if let queue = plan.excludedQueue {
            binds.append(queue)
            conditions.append("queue <> $\(binds.count)")
        }
        if let tag = plan.tag {
            binds.append(tag)
            conditions.append("tags @> jsonb_build_array($\(binds.count)::text)")
        }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let query = PostgresQuery(
            unsafeSQL: "SELECT \(PGRows.columns()), seq FROM spool_jobs \(whereClause) ORDER BY seq DESC LIMIT \(plan.fetchLimit)",
            binds: binds)
        let logger = self.logger
        return try await autocommit { client in
            var rows: [(job: Job, seq: Int64)] = []
            for try await row in try await client.query(query, logger: logger) {
                rows.append((try PGRows.job(row), try row.makeRandomAccess()[PGRows.columnCount].decode(Int64.self)))
            }
            return JobPage(rows: rows, plan: plan)
        }
    }

    public func queueStats(tenant: String?) async throws -> [QueueStats] {
        let logger = self.logger
        return try await autocommit { client in
            var stats: [String: QueueStats] = [:]
            for try await (name, stateText, n) in try await client.query("""
                SELECT queue, state, sum(n)::int8 FROM (
                    SELECT queue, tenant, state, n FROM spool_queue_counts
                    UNION ALL SELECT queue, tenant, state, n FROM spool_count_deltas) c
                WHERE \(tenant)::text IS NULL OR tenant = \(tenant)
                GROUP BY queue, state
                """, logger: logger).decode((String, String, Int64).self) {
                guard let state = JobState(rawValue: stateText) else { continue }
                stats[name, default: .empty(name)].counts[state] = Int(n)
            }
            for try await (name, paused) in try await client.query("SELECT name, paused FROM spool_queues", logger: logger).decode((String, Bool).self) {
                stats[name, default: .empty(name)].paused = paused
            }
            for try await (name, age) in try await client.query("""
                SELECT queue, extract(epoch FROM now() - min(run_at))::float8 FROM spool_jobs
                WHERE state = 'pending' AND (\(tenant)::text IS NULL OR tenant = \(tenant)) GROUP BY queue
                """, logger: logger).decode((String, Double).self) where stats[name] != nil {
                stats[name]!.oldestPendingAge = .seconds(fractional: max(0, age))
            }
            return stats.values.sorted { $0.name < $1.name }
        }
    }

    // MARK: Events

    public func eventPage(after: Int64, filter: EventFilter, limit: Int) async throws -> EventPage {
        let wanted = max(1, min(limit, 10_000))
        var found: [JobEvent] = []
        var cursor = after
        // A page of rows at a time (a row may hold a thousand events), at most 1,000 rows.
        for _ in 0..<5 {
            let (rows, atEnd) = try await eventRows(after: cursor, limit: 200)
            for (row, events) in rows {
                for event in events where filter.matches(event) {
                    found.append(event)
                    if found.count == wanted { return EventPage(events: found, next: event.seq, atEnd: false) }
                }
                cursor = max(cursor, EventLogFormat.seq(row: row, index: EventLogFormat.perRow - 1))
            }
            // The end of the log, or a gap that may still fill.
            if atEnd { return EventPage(events: found, next: cursor, atEnd: true) }
        }
        return EventPage(events: found, next: cursor, atEnd: false)
    }

    public func prunedEventSeq() async throws -> Int64 {
        let logger = self.logger
        return try await autocommit { client in
            var through: Int64 = 0
            for try await value in try await client.query(
                "SELECT coalesce(max(through), 0) FROM spool_event_log_pruned", logger: logger).decode(Int64.self) { through = value }
            return through > 0 ? EventLogFormat.seq(row: through, index: EventLogFormat.perRow - 1) : 0
        }
    }

    /// The seq of the newest event that no uncommitted transaction can precede: the last one
    /// before the first gap that is not settled (see ``eventRows(after:limit:)``).
    public func lastEventSeq() async throws -> Int64 {
        let logger = self.logger
        func lastBeforeGap() async throws -> (seq: Int64, gap: Bool, newest: Int64, writers: [String]) {
            try await autocommit { client in
                var answer: (Int64, Bool, Int64, [String]) = (0, false, 0, [])
                for try await row in try await client.query("""
                    WITH mark AS (SELECT greatest(
                            (SELECT coalesce(max(through), 0) FROM spool_event_log_settled),
                            (SELECT coalesce(max(through), 0) FROM spool_event_log_pruned)) AS m),
                    rows AS (SELECT seq, count, lag(seq, 1, (SELECT m FROM mark)) OVER (ORDER BY seq) AS prev
                             FROM spool_event_log WHERE seq >= (SELECT m FROM mark)),
                    gap AS (SELECT min(seq) AS first FROM rows WHERE seq > prev + 1)
                    SELECT coalesce((SELECT seq * 65536 + count - 1 FROM rows
                                     WHERE (SELECT first FROM gap) IS NULL OR seq < (SELECT first FROM gap)
                                     ORDER BY seq DESC LIMIT 1),
                                    (SELECT CASE WHEN m > 0 THEN m * 65536 + 65535 ELSE 0 END FROM mark)),
                           (SELECT first FROM gap) IS NOT NULL,
                           (SELECT coalesce(max(seq), 0) FROM spool_event_log),
                           \(unescaped: Self.writersNow)
                    """, logger: logger).decode((Int64, Bool, Int64, [String]).self) { answer = row }
                return answer
            }
        }
        let first = try await lastBeforeGap()
        // A gap above the settled mark: settle it if it can be, then look again.
        guard first.gap, try await settle(writers: first.writers, through: first.newest) else { return first.seq }
        return try await lastBeforeGap().seq
    }

    public func pruneEvents(before: Date, limit: Int) async throws -> Int {
        let logger = self.logger
        return try await transaction { connection, _ in
            var n = 0
            for try await deleted in try await connection.query("""
                WITH d AS (
                    DELETE FROM spool_event_log WHERE seq IN (SELECT seq FROM spool_event_log WHERE at < \(before) ORDER BY seq LIMIT \(Int64(limit)))
                    RETURNING seq),
                mark AS (
                    INSERT INTO spool_event_log_pruned (id, through) SELECT 1, max(seq) FROM d HAVING count(*) > 0
                    ON CONFLICT (id) DO UPDATE SET through = greatest(spool_event_log_pruned.through, excluded.through)
                    RETURNING 1)
                SELECT count(*) + 0 * (SELECT count(*) FROM mark) FROM d
                """, logger: logger).decode(Int64.self) { n = Int(deleted) }
            // Published topic events are kept for the same window.
            try await connection.query("""
                DELETE FROM spool_topic_events WHERE id IN (SELECT id FROM spool_topic_events WHERE created_at < \(before) LIMIT \(Int64(limit)))
                """, logger: logger)
            return n
        }
    }
}
