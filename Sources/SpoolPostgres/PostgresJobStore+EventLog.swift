import Foundation
import Logging
import PostgresNIO
import SpoolCore
import Synchronization

extension PostgresJobStore {
    /// Event-log rows after the one holding `after`, in seq order, stopping at a gap that may
    /// still fill: a transaction that has its seq but has not committed yet.
    ///
    /// A gap is stepped over only below the settled mark, and the mark moves only by this rule:
    /// a read at time `T` sees rows up to `M`. A transaction holding a seq below `M` took it
    /// before `M` was taken, so it started before `T`; and from its insert into the event log
    /// until after it has ended for every later snapshot, it holds a lock on the log. Once no
    /// transaction that started by `T` holds that lock, every seq up to `M` is final: committed
    /// (and seen by any later read) or rolled back. So no committed event is ever skipped,
    /// however slow its commit, and transactions that never write the event log (other
    /// applications) hold nothing up.
    ///
    /// `atEnd` is true when the read stopped at the log's end or at a gap, not at `limit`.
    func eventRows(after: Int64, limit: Int) async throws -> (rows: [(Int64, [JobEvent])], atEnd: Bool) {
        let afterRow = EventLogFormat.row(of: after)
        var result: [(Int64, [JobEvent])] = []
        var atEnd = true
        for round in 0..<2 {
            let read = try await readEventRows(fromRow: afterRow, limit: limit)
            result = []
            // Rows up to the pruned mark are gone for good: no gap to wait for there.
            var expected = max(afterRow, read.prunedThrough)
            var blocked = false
            for (seq, text) in read.rows {
                if seq > expected + 1 && seq - 1 > read.settled { blocked = true; break }  // a gap that may still fill
                expected = seq
                let events = EventLogFormat.decode(row: seq, text: text).filter { $0.seq > after }
                if seq > afterRow || !events.isEmpty { result.append((seq, events)) }
            }
            atEnd = blocked || read.rows.count < limit
            guard blocked, round == 0, try await settle(readAt: read.readAt, through: read.newest) else { break }
            // Settled: read again; the gap is now either filled or final.
        }
        return (result, atEnd)
    }

    /// One read of the event log with what its gap rule needs, all from one snapshot.
    struct EventLogRead {
        var rows: [(Int64, String)] = []
        var prunedThrough: Int64 = 0
        var settled: Int64 = 0
        /// The database's clock when the rows were read.
        var readAt = ""
        var newest: Int64 = 0
    }

    func readEventRows(fromRow: Int64, limit: Int) async throws -> EventLogRead {
        let logger = self.logger
        return try await autocommit { client in
            var read = EventLogRead()
            for try await row in try await client.query("""
                SELECT seq, events,
                       (SELECT coalesce(max(through), 0) FROM spool_event_log_pruned),
                       (SELECT coalesce(max(through), 0) FROM spool_event_log_settled),
                       clock_timestamp()::text,
                       (SELECT coalesce(max(seq), 0) FROM spool_event_log)
                FROM spool_event_log WHERE seq >= \(fromRow) ORDER BY seq LIMIT \(Int64(limit))
                """, logger: logger).decode((Int64, String, Int64, Int64, String, Int64).self) {
                read.rows.append((row.0, row.1))
                (read.prunedThrough, read.settled, read.readAt, read.newest) = (row.2, row.3, row.4, row.5)
            }
            return read
        }
    }

    /// The newest event-log row and when it was read, for a later ``settle(readAt:through:)``.
    func eventLogReading() async throws -> (readAt: String, newest: Int64) {
        let logger = self.logger
        return try await autocommit { client in
            var reading = ("", Int64(0))
            for try await row in try await client.query(
                "SELECT clock_timestamp()::text, (SELECT coalesce(max(seq), 0) FROM spool_event_log)", logger: logger
            ).decode((String, Int64).self) { reading = row }
            return reading
        }
    }

    /// Moves the settled mark to `through` (the newest row a read at `readAt` saw) if no
    /// transaction that started by then still holds a lock on the event log. Returns whether it
    /// did.
    func settle(readAt: String, through: Int64) async throws -> Bool {
        guard !readAt.isEmpty else { return false }
        let logger = self.logger
        return try await autocommit { client in
            var settled = false
            for try await _ in try await client.query("""
                WITH writing AS (
                    SELECT 1 FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
                    WHERE l.locktype = 'relation' AND l.mode = 'RowExclusiveLock'
                      AND l.relation = 'spool_event_log'::regclass
                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND (a.xact_start IS NULL OR a.xact_start <= \(readAt)::timestamptz))
                INSERT INTO spool_event_log_settled (id, through)
                SELECT 1, \(through) WHERE NOT EXISTS (SELECT 1 FROM writing)
                ON CONFLICT (id) DO UPDATE SET through = excluded.through
                WHERE spool_event_log_settled.through < excluded.through
                RETURNING through
                """, logger: logger).decode(Int64.self) { settled = true }
            return settled
        }
    }

    /// Moves the appended count changes into the totals (any process may; each change is
    /// taken once).
    func foldCounts() async throws {
        let logger = self.logger
        try await autocommit { client in
            try await client.query("""
                WITH d AS (
                    DELETE FROM spool_count_deltas WHERE id IN (
                        SELECT id FROM spool_count_deltas ORDER BY id LIMIT 20000 FOR UPDATE SKIP LOCKED)
                    RETURNING queue, tenant, state, n)
                INSERT INTO spool_queue_counts (queue, tenant, state, n)
                SELECT queue, tenant, state, sum(n) FROM d GROUP BY queue, tenant, state ORDER BY queue, tenant, state
                ON CONFLICT (queue, tenant, state) DO UPDATE SET n = spool_queue_counts.n + excluded.n
                """, logger: logger)
        }
    }
}
