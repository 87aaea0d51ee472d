import Foundation
import Logging
import PostgresNIO
import SpoolCore

// The three calls a busy cluster makes most — single enqueues, leases, completions — each as
// one statement that also does its bookkeeping (count changes, the event-log row, NOTIFY): one
// round trip and an implicit transaction instead of BEGIN, statements and COMMIT. Events are
// built in SQL in the format of ``EventLogFormat`` (keys j t q k y a at s r).
extension PostgresJobStore {
    /// The event-log JSON of a state event for a row with `id, tenant, queue, kind, attempt`,
    /// plus `extra` pairs. `json`, not `jsonb`: built as text and kept as text, it costs a third.
    static func eventJSON(state: String, extra: String = "") -> String {
        """
        json_build_object('j', id, 't', tenant, 'q', queue, 'k', kind, 'y', 'state', 'a', attempt,
                          'at', (extract(epoch FROM clock_timestamp()) * 1000000)::int8, 's', \(state)\(extra))
        """
    }

    /// Runs `statement` prepared; if the server refuses it, runs the same SQL unprepared.
    ///
    /// A connection remembers a failed preparation for good (postgres-nio): one that timed out
    /// waiting behind a migration's lock, say, would otherwise fail every later call on that
    /// connection. A refused statement changed nothing, so running it again is safe.
    static func run<S: PostgresPreparedStatement>(_ statement: S, on client: PostgresClient, logger: Logger) async throws -> [S.Row] {
        do {
            var rows: [S.Row] = []
            for try await row in try await client.execute(statement, logger: logger) { rows.append(row) }
            return rows
        } catch let error as PSQLError where error.code == .server && !isRetryable(error) {
            logger.debug("prepared statement refused; running it unprepared", metadata: [
                "statement": "\(S.name)", "error": "\(error.serverInfo?[.message] ?? "")"])
            var rows: [S.Row] = []
            for try await row in try await client.query(PostgresQuery(unsafeSQL: S.sql, binds: try statement.makeBindings()), logger: logger) {
                rows.append(try statement.decodeRow(row))
            }
            return rows
        }
    }

    /// Inserts jobs with no depth limit to check, in one statement.
    func insertAutocommit(_ jobs: [Job]) async throws {
        if jobs.isEmpty { return }
        let changes = ChangeSet()
        for job in jobs {
            changes.transition(.init(job), from: nil, to: job.state)
            changes.signal(.workAvailable(queue: job.queue))
        }
        let counts = changes.nonZeroCounts
        var binds = Self.insertBindings(jobs)
        binds.append(counts.map(\.0.queue)); binds.append(counts.map(\.0.tenant))
        binds.append(counts.map(\.0.state.rawValue)); binds.append(counts.map { Int64($0.1) })
        binds.append(Int64(jobs.count)); binds.append(EventLogFormat.encode(changes.events[...]))
        binds.append(["e"] + Set(jobs.map { "w:" + $0.queue }).sorted())
        let statement = InsertStatement(binds: binds)
        let logger = self.logger
        try await autocommit { client in _ = try await Self.run(statement, on: client, logger: logger) }
        for signal in changes.signals { signals.send(signal) }
    }

    /// A lease in one statement: due scheduled jobs become pending (leased next time), up to
    /// `limit` pending ones become processing, with their events and count changes.
    func leaseAutocommit(_ request: LeaseRequest) async throws -> (LeaseBatch, promoted: Int) {
        let token = LeaseToken.make()
        let leaseMs = Int64(request.leaseDuration.seconds * 1000)
        let queue = request.queue
        let logger = self.logger
        let (rows, promoted, next) = try await autocommit { client in
            var rows: [(LeasedJob, Int64)] = []
            var promoted = 0
            var next: Date?
            let statement = LeaseStatement(queue: queue, limit: Int64(request.limit), token: token.value, leaseMs: leaseMs,
                                           workerID: request.workerID, kinds: request.kinds, tenant: request.tenant)
            for row in try await Self.run(statement, on: client, logger: logger) {
                let cells = row.makeRandomAccess()
                promoted = Int(try cells[PGRows.leaseColumnCount + 1].decode(Int64.self))
                next = try cells[PGRows.leaseColumnCount + 3].decode(Date?.self)
                guard try cells[0].decode(UUID?.self) != nil else { continue }  // the row of an empty lease
                let job = try PGRows.job(row)
                rows.append((LeasedJob(job: job, lease: token), try cells[PGRows.leaseColumnCount].decode(Int64.self)))
            }
            return (rows, promoted, next)
        }
        if promoted > 0 { signals.send(.workAvailable(queue: queue)) }
        let jobs = rows.sorted { ($0.0.job.priority, -$0.1) > ($1.0.job.priority, -$1.1) }.map(\.0)
        return (LeaseBatch(jobs: jobs, nextRunAt: next), promoted)
    }

    /// Completes, in one statement, the jobs of `items` that have no callback URL, children or
    /// batch; returns the ids it completed. The others (a webhook to schedule, children to
    /// release, a batch to count, or a lost lease) take the transaction path.
    func completeAutocommit(_ items: [(JobID, LeaseToken, String?)]) async throws -> Set<HeldLease> {
        if items.isEmpty { return [] }
        let statement = CompleteStatement(items)
        let logger = self.logger
        return try await autocommit { client in
            var done = Set<HeldLease>()
            for (id, token) in try await Self.run(statement, on: client, logger: logger) {
                done.insert(HeldLease(JobID(uuid: id), LeaseToken(token)))
            }
            return done
        }
    }
}

// The fast paths as prepared statements: postgres-nio prepares each once per connection, so the
// server parses and plans them once instead of on every call (planning the lease statement
// cost more than running it for a small batch). `'spool'` is ``PostgresJobStore/channel``.

/// ``PostgresJobStore/insertAutocommit(_:)``: $1...$14 the jobs (``PostgresJobStore/insertBindings(_:)``),
/// $15...$18 the count changes, $19 and $20 the event-log row, $21 the notifications.
struct InsertStatement: PostgresPreparedStatement {
    static let name = "spool_insert_v1"
    static let sql = """
        WITH ins AS (\(PostgresJobStore.insertSQL) RETURNING 1),
        counts AS (
            INSERT INTO spool_count_deltas (queue, tenant, state, n)
            SELECT * FROM unnest($15::text[], $16::text[], $17::text[], $18::int8[])
            RETURNING 1),
        log AS (
            INSERT INTO spool_event_log (count, at, events) VALUES ($19, clock_timestamp(), $20)
            RETURNING seq),
        notes AS (SELECT pg_notify('spool', p) FROM unnest($21::text[]) AS p)
        SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM notes) + (SELECT count(*) FROM counts) + (SELECT count(*) FROM log)
        """
    typealias Row = Int64
    var binds: PostgresBindings
    func makeBindings() -> PostgresBindings { binds }
    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.decode(Int64.self) }
}

/// ``PostgresJobStore/leaseAutocommit(_:)``: $6 the kinds and $7 the tenant, or NULL for any.
struct LeaseStatement: PostgresPreparedStatement {
    static let name = "spool_lease_v4"
    static let sql = """
        WITH due AS MATERIALIZED (
            SELECT id FROM spool_jobs WHERE queue = $1 AND state = 'scheduled' AND run_at <= now()
            ORDER BY run_at LIMIT 10000 FOR UPDATE SKIP LOCKED),
        promoted AS (
            UPDATE spool_jobs SET state = 'pending' FROM due WHERE spool_jobs.id = due.id
            RETURNING spool_jobs.id, spool_jobs.tenant, spool_jobs.queue, spool_jobs.kind, spool_jobs.attempt),
        -- MATERIALIZED: run once. Inside "id IN (...)" a LIMIT ... SKIP LOCKED subquery
        -- may be run again by the plan and hand out more than the limit.
        pick AS MATERIALIZED (
            SELECT id FROM spool_jobs WHERE queue = $1 AND state = 'pending'
                AND ($6::text[] IS NULL OR kind = ANY($6::text[])) AND ($7::text IS NULL OR tenant = $7::text)
                AND NOT EXISTS (SELECT 1 FROM spool_queues WHERE name = $1 AND paused)
            ORDER BY priority DESC, seq LIMIT $2 FOR UPDATE SKIP LOCKED),
        leased AS (
            UPDATE spool_jobs SET state = 'processing', attempt = attempt + 1, lease_token = $3,
                   lease_expires_at = now() + $4 * interval '1 millisecond', worker_id = $5, started_at = now()
            FROM pick WHERE spool_jobs.id = pick.id
            RETURNING \(PGRows.leaseColumns("spool_jobs.")), spool_jobs.seq),
        ev AS (
            SELECT 0 AS part, 0::int8 AS ord, \(PostgresJobStore.eventJSON(state: "'pending'")) AS e FROM promoted
            UNION ALL
            SELECT 1, seq, \(PostgresJobStore.eventJSON(state: "'processing'")) FROM leased),
        counts AS (
            INSERT INTO spool_count_deltas (queue, tenant, state, n)
            SELECT queue, tenant, 'pending', count(*) FROM promoted GROUP BY queue, tenant
            UNION ALL SELECT queue, tenant, 'scheduled', -count(*) FROM promoted GROUP BY queue, tenant
            UNION ALL SELECT queue, tenant, 'processing', count(*) FROM leased GROUP BY queue, tenant
            UNION ALL SELECT queue, tenant, 'pending', -count(*) FROM leased GROUP BY queue, tenant
            RETURNING 1),
        log AS (
            INSERT INTO spool_event_log (count, at, events)
            SELECT count(*), clock_timestamp(), json_agg(e ORDER BY part, ord)::text FROM ev HAVING count(*) > 0
            RETURNING seq),
        notes AS (
            SELECT pg_notify('spool', p) FROM (
                SELECT 'e' AS p FROM log
                UNION ALL SELECT DISTINCT 'w:' || queue FROM promoted) n)
        SELECT l.*, (SELECT count(*) FROM promoted), (SELECT count(*) FROM notes) + (SELECT count(*) FROM counts),
               (SELECT min(run_at) FROM spool_jobs WHERE queue = $1 AND state = 'scheduled' AND run_at > now())
        FROM (SELECT 1) AS one LEFT JOIN leased AS l ON true
        """
    typealias Row = PostgresRow
    var queue: String, limit: Int64, token: String, leaseMs: Int64, workerID: String, kinds: [String]?, tenant: String?
    func makeBindings() -> PostgresBindings {
        var binds = PostgresBindings(capacity: 7)
        binds.append(queue); binds.append(limit); binds.append(token); binds.append(leaseMs); binds.append(workerID)
        if let kinds { binds.append(kinds) } else { binds.appendNull() }
        if let tenant { binds.append(tenant) } else { binds.appendNull() }
        return binds
    }
    func decodeRow(_ row: PostgresRow) -> PostgresRow { row }
}

/// ``PostgresJobStore/completeAutocommit(_:)``: $1 ids, $2 lease tokens, $3 results ("" for none).
struct CompleteStatement: PostgresPreparedStatement {
    static let name = "spool_complete_v2"
    /// Completes the jobs still held under their tokens (shared with the transaction path).
    static let update = """
        UPDATE spool_jobs SET state = 'completed', result = NULLIF(v.result, ''), finished_at = now(),
                              lease_token = NULL, lease_expires_at = NULL
        FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, token, result)
        WHERE spool_jobs.id = v.id AND spool_jobs.state = 'processing' AND spool_jobs.lease_token = v.token
        """
    static let sql = """
        WITH done AS (
            \(update)
                  AND spool_jobs.callback_url IS NULL AND NOT spool_jobs.has_children AND spool_jobs.batch_id IS NULL
            RETURNING spool_jobs.id, spool_jobs.tenant, spool_jobs.queue, spool_jobs.kind, spool_jobs.attempt, spool_jobs.result, v.token),
        counts AS (
            INSERT INTO spool_count_deltas (queue, tenant, state, n)
            SELECT queue, tenant, 'completed', count(*) FROM done GROUP BY queue, tenant
            UNION ALL SELECT queue, tenant, 'processing', -count(*) FROM done GROUP BY queue, tenant
            RETURNING 1),
        log AS (
            INSERT INTO spool_event_log (count, at, events)
            SELECT count(*), clock_timestamp(), json_agg(\(PostgresJobStore.eventJSON(state: "'completed'", extra: ", 'r', result::json")))::text
            FROM done HAVING count(*) > 0
            RETURNING seq),
        notes AS (SELECT pg_notify('spool', 'e') FROM log)
        SELECT id, token FROM done, (SELECT (SELECT count(*) FROM notes) + (SELECT count(*) FROM counts)) AS side
        """
    typealias Row = (UUID, String)
    var ids: [UUID], tokens: [String], results: [String]
    init(_ items: [(JobID, LeaseToken, String?)]) {
        ids = items.map(\.0.uuid)
        tokens = items.map(\.1.value)
        results = items.map { $0.2 ?? "" }  // no JSON document is empty: "" stands for none
    }
    func makeBindings() -> PostgresBindings {
        var binds = PostgresBindings(capacity: 3)
        binds.append(ids); binds.append(tokens); binds.append(results)
        return binds
    }
    func decodeRow(_ row: PostgresRow) throws -> (UUID, String) { try row.decode((UUID, String).self) }
}

/// A job under one lease: what batched completions are answered by (a stale and the current
/// lease of one job may meet in a batch, and only the current one may succeed).
struct HeldLease: Hashable, Sendable {
    var id: JobID
    var lease: LeaseToken
    init(_ id: JobID, _ lease: LeaseToken) { self.id = id; self.lease = lease }
}
