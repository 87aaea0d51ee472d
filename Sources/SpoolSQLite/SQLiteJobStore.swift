import Foundation
import GRDB
import SpoolCore
import Synchronization

/// The embedded store: one SQLite file in WAL mode.
///
/// Writes go through a single ``GroupCommitWriter``; reads run concurrently on a pool of
/// read connections. Several processes may open the same file (a CLI next to `spool serve`);
/// SQLite's file lock serialises their writes.
public final class SQLiteJobStore: JobStore {
    /// How hard a commit is pushed to disk before enqueue and completion calls return.
    public enum Durability: String, Sendable, CaseIterable {
        /// fsync on every group commit (the default): a job accepted survives power loss.
        case full = "FULL"
        /// fsync at checkpoints only: survives a crash of the process, not of the machine.
        case normal = "NORMAL"
        /// No fsync at all (benchmarks and throwaway data).
        case off = "OFF"
    }

    public let signals = StoreSignals()
    public let path: String
    let pool: DatabasePool
    let writer: GroupCommitWriter
    let closed = Mutex(false)
    let completions = WriteBatcher<(JobID, LeaseToken, String?), Void>(overlap: .afterTake)
    let singleEnqueues = WriteBatcher<(Job, Int?), EnqueueResult>(overlap: .afterTake)

    /// Opens (creating if needed) the database at `path`. Call ``migrate()`` before use.
    public init(path: String, durability: Durability = .full) throws {
        self.path = path
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.maximumReaderCount = 8
        config.label = "spool"
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability.rawValue)")
            // Workers and the gateway read while the writer commits: keep checkpoints small.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 4000")
        }
        do {
            pool = try DatabasePool(path: path, configuration: config)
        } catch {
            throw SpoolError.unavailable(reason: "cannot open the SQLite database at \(path): \(error)")
        }
        writer = GroupCommitWriter(pool: pool, durableSync: durability.rawValue, signals: signals)
        // The batch is taken on the writer thread, when its transaction runs: whatever arrived
        // while the previous commit was under way goes in. Several statements for a large
        // batch: the writer's savepoint keeps each write all or nothing.
        completions.write = { [writer] take in
            try await writer.write { db, batch in try Self.completeMany(db, batch, take()) }
        }
        singleEnqueues.write = { [writer] take in
            try await writer.write { db, batch in try Self.insertMany(db, batch, take()) }
        }
    }

    public func migrate() async throws {
        // Two processes opening a new file at once (`spool serve` and a CLI command) both try
        // the first migrations: the loser's migration rolls back ("table jobs already exists")
        // and runs again past what the winner applied. Only that is retried: an error while no
        // other process made progress is thrown at once.
        var applied = try await pool.read { try Schema.migrator.appliedIdentifiers($0) }
        for attempt in 1... {
            do {
                return try Schema.migrator.migrate(pool)
            } catch let error as DatabaseError where attempt < 20 && error.resultCode == .SQLITE_ERROR {
                let now = try await pool.read { try Schema.migrator.appliedIdentifiers($0) }
                guard now.count > applied.count else { throw Self.map(error) }
                applied = now
            } catch { throw Self.map(error) }
        }
        preconditionFailure("unreachable")
    }

    /// Commits queued writes, stops the writer thread and closes the file.
    public func close() async throws {
        closed.withLock { $0 = true }
        writer.close()
        try pool.close()
    }

    // MARK: Enqueue

    public func enqueue(_ jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> [EnqueueResult] {
        if jobs.isEmpty { return [] }
        for job in jobs { try job.validateNames() }
        // The common case, one job without an idempotency key, is merged with its neighbours
        // into one multi-row insert.
        if jobs.count == 1, jobs[0].idempotencyKey == nil, jobs[0].dependsOn.isEmpty, jobs[0].batchID == nil {
            let request = jobs[0]
            let job = Job(new: request, defaults: defaults[request.queue], now: Date())
            return [try await singleEnqueues.submit((job, depthLimits[request.queue]))]
        }
        let plain = jobs.count == 1 && jobs[0].dependsOn.isEmpty && jobs[0].batchID == nil
        return try await writer.write(atomic: plain) { db, batch in
            try Self.enqueue(jobs, defaults: defaults, depthLimits: depthLimits, db, batch)
        }
    }

    /// Enqueues `jobs` in the caller's transaction (``EnqueuePlan``): idempotency keys, parents,
    /// depth limits, batches.
    static func enqueue(_ jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int],
                        _ db: Database, _ batch: GroupCommitWriter.Batch) throws -> [EnqueueResult] {
        let plan = EnqueuePlan(jobs)
        var existing: [EnqueuePlan.Key: Job] = [:]
        for key in plan.keys {
            if let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT \(Rows.columns) FROM jobs WHERE tenant = ? AND idempotency_key = ?"),
                arguments: [key.tenant, key.key]) {
                existing[key] = try Rows.job(row)
            }
        }
        let parents = try markParents(plan.externalParents(existing: existing), db)
        let resolution = try plan.resolve(existing: existing, parents: parents, defaults: defaults, now: Date())
        // Backpressure: refuse the whole request if any queue would pass its limit.
        for (queue, n) in DepthLimit.adding(resolution.new).sorted(by: { $0.key < $1.key }) {
            guard let limit = depthLimits[queue] else { continue }
            try DepthLimit.check(queue: queue, current: try waitingCount(db, queue: queue) + batch.waitingDelta(queue: queue),
                                 adding: n, limit: limit)
        }
        try insert(resolution.new, db, batch)
        if resolution.usesWorkflows { try writeWorkflows(resolution, db, batch) }
        return resolution.results
    }

    /// Writes new jobs with multi-row inserts (at most 500 rows per statement).
    static func insert(_ jobs: [Job], _ db: Database, _ batch: GroupCommitWriter.Batch) throws {
        for start in stride(from: 0, to: jobs.count, by: 500) {
            let slice = jobs[start..<min(start + 500, jobs.count)]
            var arguments = StatementArguments()
            for job in slice {
                arguments += [
                    job.id.description, job.tenant, job.queue, job.kind, String(decoding: job.payload, as: UTF8.self),
                    job.priority, job.state.rawValue, job.maxAttempts, Rows.micros(job.runAt),
                    Int64(job.timeout.seconds * 1000), Rows.micros(job.createdAt), job.idempotencyKey,
                    job.callbackURL, Rows.jsonText(job.tags), 0,
                ]
                batch.transition(.init(job), from: nil, to: job.state)
                batch.signal(.workAvailable(queue: job.queue))
            }
            try db.cachedStatement(sql: """
                INSERT INTO jobs (id, tenant, queue, kind, payload, priority, state, max_attempts,
                                  run_at, timeout_ms, created_at, idempotency_key, callback_url, tags, attempt)
                VALUES \(placeholders(rows: slice.count, columns: 15))
                """).execute(arguments: arguments)
        }
    }

    /// Inserts single enqueues gathered from many callers. Each is checked against its queue's
    /// depth limit in arrival order; those past it are refused alone.
    static func insertMany(_ db: Database, _ batch: GroupCommitWriter.Batch, _ items: [(Job, Int?)]) throws -> [Result<EnqueueResult, SpoolError>] {
        var depth: [String: Int] = [:]
        for queue in DepthLimit.limitedQueues(items) {
            depth[queue] = try waitingCount(db, queue: queue) + batch.waitingDelta(queue: queue)
        }
        let (accepted, results) = DepthLimit.admit(items, depth: depth)
        try insert(accepted, db, batch)
        return results
    }

    /// Jobs waiting in `queue` (pending + scheduled), as committed.
    static func waitingCount(_ db: Database, queue: String) throws -> Int {
        try Int.fetchOne(
            db.cachedStatement(sql: "SELECT coalesce(sum(n), 0) FROM queue_counts WHERE queue = ? AND state IN ('pending', 'scheduled')"),
            arguments: [queue]) ?? 0
    }

    // MARK: Workers

    public func lease(_ request: LeaseRequest) async throws -> LeaseBatch {
        let queue = request.queue, limit = max(1, min(request.limit, 1000))
        try NewJob.validateQueue(queue)
        let kinds = request.kinds.map { Rows.jsonText($0) }, tenant = request.tenant
        let workerID = request.workerID, leaseDuration = request.leaseDuration
        return try await writer.write(durable: false) { db, batch in
            let now = Rows.micros(Date())
            // Due scheduled jobs are ready, paused queue or not (a paused queue hands out nothing).
            let promoted = try Row.fetchAll(
                db.cachedStatement(sql: "UPDATE jobs SET state = 'pending' WHERE queue = ? AND state = 'scheduled' AND run_at <= ? RETURNING id, tenant, kind, attempt"),
                arguments: [queue, now])
            for row in promoted { batch.transition(try Rows.key(row, queue: queue), from: .scheduled, to: .pending) }
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT paused FROM queues WHERE name = ?"), arguments: [queue]) == true {
                return LeaseBatch(jobs: [], nextRunAt: nil)
            }
            let token = LeaseToken.make()
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    UPDATE jobs SET state = 'processing', attempt = attempt + 1, lease_token = ?1, lease_expires_at = ?2,
                                    worker_id = ?3, started_at = ?4
                    WHERE seq IN (SELECT seq FROM jobs WHERE queue = ?5 AND state = 'pending'
                                    AND (?7 IS NULL OR kind IN (SELECT value FROM json_each(?7)))
                                    AND (?8 IS NULL OR tenant = ?8)
                                  ORDER BY priority DESC, seq LIMIT ?6)
                    RETURNING \(Rows.leaseColumns)
                    """),
                arguments: [token.value, now + Int64(leaseDuration.seconds * 1e6), workerID, now, queue, limit, kinds, tenant])
            let jobs = try Self.parentResults(try rows.map { LeasedJob(job: try Rows.job($0), lease: token) }, db)
                .sorted { ($0.job.priority, $1.job.id) > ($1.job.priority, $0.job.id) }
            for job in jobs { batch.transition(.init(job.job), from: .pending, to: .processing) }
            let next = try Int64.fetchOne(
                db.cachedStatement(sql: "SELECT min(run_at) FROM jobs WHERE queue = ? AND state = 'scheduled'"), arguments: [queue])
            return LeaseBatch(jobs: jobs, nextRunAt: next.map(Rows.date))
        }
    }

    public func heartbeat(_ leases: [(JobID, LeaseToken)], leaseDuration: Duration) async throws -> Set<JobID> {
        if leases.isEmpty { return [] }
        return try await writer.write(durable: false, atomic: true) { db, _ in
            let expires = Rows.micros(Date()) + Int64(leaseDuration.seconds * 1e6)
            let statement = try db.cachedStatement(sql: "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND state = 'processing' AND lease_token = ?")
            var lost = Set<JobID>()
            for (id, token) in leases {
                try statement.execute(arguments: [expires, id.description, token.value])
                if db.changesCount == 0 { lost.insert(id) }
            }
            return lost
        }
    }

    public func reportProgress(_ id: JobID, lease: LeaseToken, progress: JobProgress) async throws {
        try await writer.write(durable: false, atomic: true) { db, batch in
            let row = try Row.fetchOne(
                db.cachedStatement(sql: """
                    UPDATE jobs SET progress_percent = ?, progress_message = ? WHERE id = ? AND state = 'processing' AND lease_token = ?
                    RETURNING id, tenant, kind, attempt, queue
                    """),
                arguments: [progress.percent, progress.message, id.description, lease.value])
            guard let row else { throw SpoolError.leaseLost(id) }
            batch.progress(try Rows.key(row, queue: row[4]), progress)
        }
    }

    public func complete(_ id: JobID, lease: LeaseToken, result: Data?) async throws {
        if let result { try JobResult.validate(result) }  // a bad result must not fail the batch it would join
        try await completions.submit((id, lease, result.map { String(decoding: $0, as: UTF8.self) }))
    }

    /// Completes many jobs with one statement per 500, checking each lease token (fencing).
    static func completeMany(_ db: Database, _ batch: GroupCommitWriter.Batch, _ items: [(JobID, LeaseToken, String?)]) throws -> [Result<Void, SpoolError>] {
        let now = Rows.micros(Date())
        // A job twice in one batch (a stale and the current lease of it): the statement below
        // could not tell which lease completed it, so only the current one goes in.
        var seen = Set<JobID>(), twice = Set<JobID>()
        for (id, _, _) in items where !seen.insert(id).inserted { twice.insert(id) }
        var current: [JobID: String] = [:]
        for id in twice {
            current[id] = try String.fetchOne(db, sql: "SELECT lease_token FROM jobs WHERE id = ? AND state = 'processing'", arguments: [id.description])
        }
        let eligible = items.map { twice.contains($0.0) ? current[$0.0] == $0.1.value : true }
        let toComplete = zip(items, eligible).filter(\.1).map(\.0)
        var done = Set<JobID>()
        for start in stride(from: 0, to: toComplete.count, by: 500) {
            let slice = toComplete[start..<min(start + 500, toComplete.count)]
            var arguments: StatementArguments = [now]
            for (id, lease, result) in slice { arguments += [id.description, lease.value, result] }
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    UPDATE jobs SET state = 'completed', result = v.column3, finished_at = ?,
                                    lease_token = NULL, lease_expires_at = NULL
                    FROM (VALUES \(placeholders(rows: slice.count, columns: 3))) AS v
                    WHERE jobs.id = v.column1 AND jobs.state = 'processing' AND jobs.lease_token = v.column2
                    RETURNING jobs.id, jobs.tenant, jobs.kind, jobs.attempt, jobs.queue, jobs.result, jobs.callback_url,
                              jobs.has_children, jobs.batch_id
                    """),
                arguments: arguments)
            for row in rows {
                let key = try Rows.key(row, queue: row[4])
                done.insert(key.id)
                batch.transition(key, from: .processing, to: .completed, result: (row[5] as String?).map { Data($0.utf8) })
                try finished(key, state: .completed, callbackURL: row[6], hasChildren: row[7], batchID: row.hasNull(atIndex: 8) ? nil : JobID(row[8] as String), db, batch)
            }
        }
        return zip(items, eligible).map { item, eligible in
            eligible && done.contains(item.0) ? .success(()) : .failure(.leaseLost(item.0))
        }
    }

    public func fail(_ id: JobID, lease: LeaseToken, error: AttemptError, retryAt: Date?) async throws {
        let errorJSON = String(decoding: try JSON.encode(error), as: UTF8.self)
        // Several statements (the webhook, children, the batch): in a savepoint.
        try await writer.write { db, batch in
            let now = Date()
            let state: JobState = retryAt.map { $0 > now ? .scheduled : .pending } ?? .failed
            let row = try Row.fetchOne(
                db.cachedStatement(sql: """
                    UPDATE jobs SET state = ?, run_at = coalesce(?, run_at), finished_at = ?, lease_token = NULL,
                                    lease_expires_at = NULL, errors = json_insert(errors, '$[#]', json(?))
                    WHERE id = ? AND state = 'processing' AND lease_token = ?
                    RETURNING id, tenant, kind, attempt, queue, callback_url, has_children, batch_id
                    """),
                arguments: [state.rawValue, retryAt.map(Rows.micros), state == .failed ? Rows.micros(now) : nil,
                            errorJSON, id.description, lease.value])
            guard let row else { throw SpoolError.leaseLost(id) }
            let key = try Rows.key(row, queue: row[4])
            batch.transition(key, from: .processing, to: state, error: error)
            if state == .failed {
                try Self.finished(key, state: .failed, callbackURL: row[5], hasChildren: row[6], batchID: (row[7] as String?).flatMap(JobID.init), db, batch)
            }
            if state != .failed { batch.signal(.workAvailable(queue: key.queue)) }
        }
    }

    public func release(_ id: JobID, lease: LeaseToken) async throws {
        try await writer.write(atomic: true) { db, batch in
            let row = try Row.fetchOne(
                db.cachedStatement(sql: """
                    UPDATE jobs SET state = 'pending', attempt = max(0, attempt - 1), lease_token = NULL, lease_expires_at = NULL, worker_id = NULL
                    WHERE id = ? AND state = 'processing' AND lease_token = ?
                    RETURNING id, tenant, kind, attempt, queue
                    """),
                arguments: [id.description, lease.value])
            guard let row else { throw SpoolError.leaseLost(id) }
            let key = try Rows.key(row, queue: row[4])
            batch.transition(key, from: .processing, to: .pending)
            batch.signal(.workAvailable(queue: key.queue))
        }
    }

    public func rescueExpiredLeases() async throws -> Int {
        try await writer.write { db, batch in
            let now = Rows.micros(Date())
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    UPDATE jobs SET
                        state = CASE WHEN attempt < max_attempts THEN 'pending' ELSE 'failed' END,
                        finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE ?1 END,
                        errors = json_insert(errors, '$[#]', json_object(
                            'attempt', attempt,
                            'message', ?2 || coalesce(worker_id, '?') || ?3,
                            'at', strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000000.0, 'unixepoch'),
                            'reason', ?4,
                            'worker', worker_id)),
                        lease_token = NULL, lease_expires_at = NULL
                    WHERE id IN (SELECT id FROM jobs WHERE state = 'processing' AND lease_expires_at < ?1
                                 ORDER BY lease_expires_at LIMIT \(LeaseRescue.batchLimit))
                    RETURNING id, tenant, kind, attempt, queue, state, worker_id, callback_url, has_children, batch_id
                    """),
                arguments: [now, LeaseRescue.messagePrefix, LeaseRescue.messageSuffix, LeaseRescue.reason])
            for row in rows {
                let key = try Rows.key(row, queue: row[4])
                let state: JobState = (row[5] as String) == "pending" ? .pending : .failed
                let error = LeaseRescue.error(attempt: key.attempt, worker: row[6], at: Rows.date(now))
                batch.transition(key, from: .processing, to: state, error: error)
                if state == .pending { batch.signal(.workAvailable(queue: key.queue)) }
                if state == .failed {
                    try Self.finished(key, state: .failed, callbackURL: row[7], hasChildren: row[8], batchID: (row[9] as String?).flatMap(JobID.init), db, batch)
                }
            }
            return rows.count
        }
    }

    // MARK: Helpers

    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        if closed.withLock({ $0 }) { throw SpoolError.unavailable(reason: "the store is closed") }
        do { return try await pool.read(body) } catch { throw Self.map(error) }
    }

    static func fetchJob(_ db: Database, _ id: JobID, tenant: String?) throws -> Job {
        guard let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT \(Rows.columns) FROM jobs WHERE id = ?"), arguments: [id.description])
        else { throw SpoolError.notFound(id) }
        let job = try Rows.job(row)
        if let tenant, job.tenant != tenant { throw SpoolError.notFound(id) }
        return job
    }

    /// Turns SQLite's errors into the store's: a busy, full or unreachable database is
    /// `unavailable` (the gateway answers 503), everything else passes through.
    static func map(_ error: any Error) -> any Error {
        guard let dbError = error as? DatabaseError else { return error }
        switch dbError.resultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_FULL, .SQLITE_IOERR, .SQLITE_CANTOPEN, .SQLITE_READONLY, .SQLITE_PROTOCOL:
            return SpoolError.unavailable(reason: dbError.message ?? "\(dbError.resultCode)")
        default:
            return error
        }
    }
}

extension SQLiteJobStore {
    /// Writes `count` completed jobs straight into the table, in one transaction: history for
    /// benchmarks that check the queue does not slow down as finished jobs pile up.
    public func seedFinishedJobs(count: Int, queue: String, kind: String) async throws {
        guard count > 0 else { return }
        try await writer.write(durable: false, atomic: true) { db, batch in
            // One statement (a counting CTE), not a million: ids are UUIDv7-shaped, made of
            // the current time and the row number.
            let t = Rows.micros(Date())
            let millis = t / 1000
            try db.execute(sql: """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                INSERT INTO jobs (id, tenant, queue, kind, payload, priority, state, attempt, max_attempts, run_at,
                                  timeout_ms, created_at, started_at, finished_at, result)
                SELECT printf('%08x-%04x-7%03x-%04x-%012x', ? >> 16, ? & 65535, (i >> 48) & 4095, 32768 | ((i >> 36) & 4095), i & 281474976710655),
                       'default', ?, ?, '{}', 0, 'completed', 1, 1, ?, 60000, ?, ?, ?, 'null'
                FROM n
                """, arguments: [count, millis, millis, queue, kind, t, t, t, t])
            batch.move(queue: queue, tenant: NewJob.defaultTenant, from: nil, to: .completed, count: count)
        }
    }
}
