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
    /// a read sees rows up to `M` and, in the same statement, which transactions hold a lock on
    /// the event log (``writersNow``). A transaction holding a seq below `M` that had not
    /// committed by the read's snapshot still held that lock when the read looked: a writer takes
    /// it at its insert and keeps it until after it is visible to new snapshots, and it has a
    /// transaction id before it takes its seq (``PostgresSchema`` makes sure). Once none of those
    /// transactions is running any more, every seq up to `M` is final: committed (and seen by any
    /// later read) or rolled back. So no committed event is ever skipped, however slow its commit;
    /// transactions that never write the event log (other applications) hold nothing up, and
    /// nothing depends on clocks or on what other database roles may see.
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
            guard blocked, round == 0, try await settle(writers: read.writers, through: read.newest) else { break }
            // Settled: read again; the gap is now either filled or final.
        }
        return (result, atEnd)
    }

    /// One read of the event log with what its gap rule needs, all from one snapshot.
    struct EventLogRead {
        var rows: [(Int64, String)] = []
        var prunedThrough: Int64 = 0
        var settled: Int64 = 0
        /// The transactions that held a lock on the event log when the rows were read.
        var writers: [String] = []
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
                       \(unescaped: Self.writersNow),
                       (SELECT coalesce(max(seq), 0) FROM spool_event_log)
                FROM spool_event_log WHERE seq >= \(fromRow) ORDER BY seq LIMIT \(Int64(limit))
                """, logger: logger).decode((Int64, String, Int64, Int64, [String], Int64).self) {
                read.rows.append((row.0, row.1))
                (read.prunedThrough, read.settled, read.writers, read.newest) = (row.2, row.3, row.4, row.5)
            }
            return read
        }
    }

    /// The transaction ids (as text) of everyone holding a lock on the event log: the writers
    /// whose rows may not be visible yet. A scalar subquery, so one value per statement.
    static let writersNow = """
        (SELECT coalesce(array_agg(t.transactionid::text), '{}')
         FROM pg_locks r JOIN pg_locks t ON t.pid = r.pid AND t.locktype = 'transactionid'
         WHERE r.locktype = 'relation' AND r.mode = 'RowExclusiveLock' AND r.relation = 'spool_event_log'::regclass
           AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
        """

    /// The newest event-log row and who was writing the log then, for a later
    /// ``settle(writers:through:)``.
    func eventLogReading() async throws -> (writers: [String], newest: Int64) {
        let logger = self.logger
        return try await autocommit { client in
            var reading: ([String], Int64) = ([], 0)
            for try await row in try await client.query(
                "SELECT \(unescaped: Self.writersNow), (SELECT coalesce(max(seq), 0) FROM spool_event_log)", logger: logger
            ).decode(([String], Int64).self) { reading = row }
            return reading
        }
    }

    /// Moves the settled mark to `through` (the newest row a read saw) once none of `writers`
    /// (who held a lock on the event log at that read) is running any more. Returns whether it
    /// did.
    func settle(writers: [String], through: Int64) async throws -> Bool {
        let logger = self.logger
        return try await autocommit { client in
            var settled = false
            for try await _ in try await client.query("""
                INSERT INTO spool_event_log_settled (id, through)
                SELECT 1, \(through) WHERE NOT EXISTS (
                    SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND transactionid::text = ANY(\(writers)::text[]))
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
