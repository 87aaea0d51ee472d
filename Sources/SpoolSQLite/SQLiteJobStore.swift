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
    private let pool: DatabasePool
    private let writer: GroupCommitWriter
    private let closed = Mutex(false)
    private let completions: Coalescer<(JobID, LeaseToken, String?), Void>
    private let singleEnqueues: Coalescer<(Job, Int?), EnqueueResult>

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
        completions = Coalescer(writer: writer, body: Self.completeMany)
        singleEnqueues = Coalescer(writer: writer, body: Self.insertMany)
    }

    public func migrate() async throws {
        do {
            try Schema.migrator.migrate(pool)
        } catch { throw Self.map(error) }
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
        if jobs.count == 1, jobs[0].idempotencyKey == nil {
            let request = jobs[0]
            let job = Job(new: request, defaults: defaults[request.queue], now: Date())
            return [try await singleEnqueues.submit((job, depthLimits[request.queue]))]
        }
        return try await writer.write(atomic: jobs.count == 1) { db, batch in
            let plan = EnqueuePlan(jobs)
            var existing: [EnqueuePlan.Key: Job] = [:]
            for key in plan.keys {
                if let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT \(Rows.columns) FROM jobs WHERE tenant = ? AND idempotency_key = ?"),
                    arguments: [key.tenant, key.key]) {
                    existing[key] = try Rows.job(row)
                }
            }
            let (results, new) = try plan.resolve(existing: existing, defaults: defaults, now: Date())
            // Backpressure: refuse the whole request if any queue would pass its limit.
            for (queue, n) in DepthLimit.adding(new) {
                guard let limit = depthLimits[queue] else { continue }
                try DepthLimit.check(queue: queue, current: try Self.waitingCount(db, queue: queue) + batch.waitingDelta(queue: queue),
                                     adding: n, limit: limit)
            }
            try Self.insert(new, db, batch)
            return results
        }
    }

    /// Writes new jobs with multi-row inserts (at most 500 rows per statement).
    private static func insert(_ jobs: [Job], _ db: Database, _ batch: GroupCommitWriter.Batch) throws {
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
    private static func insertMany(_ db: Database, _ batch: GroupCommitWriter.Batch, _ items: [(Job, Int?)]) throws -> [Result<EnqueueResult, SpoolError>] {
        var depth: [String: Int] = [:]
        for queue in DepthLimit.limitedQueues(items) {
            depth[queue] = try waitingCount(db, queue: queue) + batch.waitingDelta(queue: queue)
        }
        let (accepted, results) = DepthLimit.admit(items, depth: depth)
        try insert(accepted, db, batch)
        return results
    }

    /// Jobs waiting in `queue` (pending + scheduled), as committed.
    private static func waitingCount(_ db: Database, queue: String) throws -> Int {
        try Int.fetchOne(
            db.cachedStatement(sql: "SELECT coalesce(sum(n), 0) FROM queue_counts WHERE queue = ? AND state IN ('pending', 'scheduled')"),
            arguments: [queue]) ?? 0
    }

    // MARK: Workers

    public func lease(queue: String, limit: Int, workerID: String, leaseDuration: Duration) async throws -> LeaseBatch {
        try NewJob.validateQueue(queue)
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
                    UPDATE jobs SET state = 'processing', attempt = attempt + 1, lease_token = ?, lease_expires_at = ?,
                                    worker_id = ?, started_at = ?
                    WHERE seq IN (SELECT seq FROM jobs WHERE queue = ? AND state = 'pending' ORDER BY priority DESC, seq LIMIT ?)
                    RETURNING \(Rows.columns)
                    """),
                arguments: [token.value, now + Int64(leaseDuration.seconds * 1e6), workerID, now, queue, limit])
            let jobs = try rows.map { LeasedJob(job: try Rows.job($0), lease: token) }
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
    private static func completeMany(_ db: Database, _ batch: GroupCommitWriter.Batch, _ items: [(JobID, LeaseToken, String?)]) throws -> [Result<Void, SpoolError>] {
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
                    RETURNING jobs.id, jobs.tenant, jobs.kind, jobs.attempt, jobs.queue, jobs.result, jobs.callback_url
                    """),
                arguments: arguments)
            for row in rows {
                let key = try Rows.key(row, queue: row[4])
                done.insert(key.id)
                batch.transition(key, from: .processing, to: .completed, result: (row[5] as String?).map { Data($0.utf8) })
                try scheduleWebhook(db, batch, key, url: row[6], state: .completed)
            }
        }
        return zip(items, eligible).map { item, eligible in
            eligible && done.contains(item.0) ? .success(()) : .failure(.leaseLost(item.0))
        }
    }

    public func fail(_ id: JobID, lease: LeaseToken, error: AttemptError, retryAt: Date?) async throws {
        let errorJSON = String(decoding: try JSON.encode(error), as: UTF8.self)
        try await writer.write(atomic: true) { db, batch in
            let now = Date()
            let state: JobState = retryAt.map { $0 > now ? .scheduled : .pending } ?? .failed
            let row = try Row.fetchOne(
                db.cachedStatement(sql: """
                    UPDATE jobs SET state = ?, run_at = coalesce(?, run_at), finished_at = ?, lease_token = NULL,
                                    lease_expires_at = NULL, errors = json_insert(errors, '$[#]', json(?))
                    WHERE id = ? AND state = 'processing' AND lease_token = ?
                    RETURNING id, tenant, kind, attempt, queue, callback_url
                    """),
                arguments: [state.rawValue, retryAt.map(Rows.micros), state == .failed ? Rows.micros(now) : nil,
                            errorJSON, id.description, lease.value])
            guard let row else { throw SpoolError.leaseLost(id) }
            let key = try Rows.key(row, queue: row[4])
            batch.transition(key, from: .processing, to: state, error: error)
            if state == .failed { try Self.scheduleWebhook(db, batch, key, url: row[5], state: .failed) }
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
        try await writer.write(atomic: true) { db, batch in
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
                            'reason', ?4)),
                        lease_token = NULL, lease_expires_at = NULL
                    WHERE id IN (SELECT id FROM jobs WHERE state = 'processing' AND lease_expires_at < ?1
                                 ORDER BY lease_expires_at LIMIT \(LeaseRescue.batchLimit))
                    RETURNING id, tenant, kind, attempt, queue, state, worker_id, callback_url
                    """),
                arguments: [now, LeaseRescue.messagePrefix, LeaseRescue.messageSuffix, LeaseRescue.reason])
            for row in rows {
                let key = try Rows.key(row, queue: row[4])
                let state: JobState = (row[5] as String) == "pending" ? .pending : .failed
                let error = LeaseRescue.error(attempt: key.attempt, worker: row[6], at: Rows.date(now))
                batch.transition(key, from: .processing, to: state, error: error)
                if state == .pending { batch.signal(.workAvailable(queue: key.queue)) }
                if state == .failed { try Self.scheduleWebhook(db, batch, key, url: row[7], state: .failed) }
            }
            return rows.count
        }
    }

    // MARK: Operators and clients

    public func cancel(_ id: JobID, tenant: String?) async throws -> Job {
        try await writer.write(atomic: true) { db, batch in
            let job = try Self.fetchJob(db, id, tenant: tenant)
            guard job.state.canCancel else { throw SpoolError.invalidTransition(id: id, from: job.state, operation: "cancel") }
            try db.cachedStatement(sql: """
                UPDATE jobs SET state = 'cancelled', finished_at = ?, lease_token = NULL, lease_expires_at = NULL WHERE id = ?
                """).execute(arguments: [Rows.micros(Date()), id.description])
            batch.transition(.init(job), from: job.state, to: .cancelled)
            if job.state == .processing { batch.signal(.jobCancelled(id)) }
            try Self.scheduleWebhook(db, batch, .init(job), url: job.callbackURL, state: .cancelled)
            return try Self.fetchJob(db, id, tenant: tenant)
        }
    }

    public func retry(_ id: JobID, tenant: String?) async throws -> Job {
        try await writer.write(atomic: true) { db, batch in
            let job = try Self.fetchJob(db, id, tenant: tenant)
            guard job.state.canRetry else { throw SpoolError.invalidTransition(id: id, from: job.state, operation: "retry") }
            try db.cachedStatement(sql: """
                UPDATE jobs SET state = 'pending', attempt = 0, run_at = ?, finished_at = NULL, result = NULL,
                                progress_percent = NULL, progress_message = NULL, worker_id = NULL
                WHERE id = ?
                """).execute(arguments: [Rows.micros(Date()), id.description])
            var key = ChangeSet.JobKey(job)
            key.attempt = 0
            batch.transition(key, from: job.state, to: .pending)
            batch.signal(.workAvailable(queue: job.queue))
            return try Self.fetchJob(db, id, tenant: tenant)
        }
    }

    public func delete(_ id: JobID, tenant: String?) async throws {
        try await writer.write(atomic: true) { db, batch in
            let job = try Self.fetchJob(db, id, tenant: tenant)
            guard job.state.isFinished else { throw SpoolError.invalidTransition(id: id, from: job.state, operation: "delete") }
            try db.execute(sql: "DELETE FROM jobs WHERE id = ?", arguments: [id.description])
            batch.transition(.init(job), from: job.state, to: nil)
        }
    }

    public func retryFailed(queue: String, tenant: String?) async throws -> Int {
        try NewJob.validateQueue(queue)
        return try await writer.write(atomic: true) { db, batch in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    UPDATE jobs SET state = 'pending', attempt = 0, run_at = ?, finished_at = NULL, worker_id = NULL
                    WHERE queue = ? AND state = 'failed' AND (? IS NULL OR tenant = ?)
                    RETURNING id, tenant, kind, attempt
                    """,
                arguments: [Rows.micros(Date()), queue, tenant, tenant])
            for row in rows { batch.transition(try Rows.key(row, queue: queue), from: .failed, to: .pending) }
            if !rows.isEmpty { batch.signal(.workAvailable(queue: queue)) }
            return rows.count
        }
    }

    public func purge(queue: String, tenant: String?) async throws -> Int {
        try NewJob.validateQueue(queue)
        return try await writer.write(atomic: true) { db, batch in
            let rows = try Row.fetchAll(
                db,
                sql: "DELETE FROM jobs WHERE queue = ? AND state IN ('pending', 'scheduled') AND (? IS NULL OR tenant = ?) RETURNING id, tenant, kind, attempt, state",
                arguments: [queue, tenant, tenant])
            for row in rows {
                batch.transition(try Rows.key(row, queue: queue), from: JobState(rawValue: row[4]), to: nil)
            }
            return rows.count
        }
    }

    public func setPaused(_ paused: Bool, queue: String) async throws {
        try NewJob.validateQueue(queue)
        try await writer.write(atomic: true) { db, batch in
            try db.execute(
                sql: "INSERT INTO queues(name, paused) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET paused = excluded.paused",
                arguments: [queue, paused])
            if !paused { batch.signal(.queueResumed(queue: queue)) }
        }
    }

    public func prune(completedBefore: Date?, failedBefore: Date?, limit: Int) async throws -> Int {
        try await writer.write(durable: false) { db, batch in
            var deleted = 0
            let plan = PrunePlan(completedBefore: completedBefore, failedBefore: failedBefore)
            for (state, cutoff) in plan.steps where deleted < limit {
                // A job finished before the cut-off was created before it, and ids are
                // time-ordered: the range scan on the id index visits only old jobs.
                let rows = try Row.fetchAll(
                    db.cachedStatement(sql: """
                        DELETE FROM jobs WHERE seq IN (
                            SELECT seq FROM jobs WHERE id < ? AND state = ? AND finished_at < ? LIMIT ?)
                        RETURNING queue, tenant
                        """),
                    arguments: [JobID.lowerBound(at: cutoff).description, state.rawValue, Rows.micros(cutoff), limit - deleted])
                for row in rows { batch.move(queue: row[0], tenant: row[1], from: state, to: nil) }
                deleted += rows.count
            }
            // Delivery records go with the oldest history kept.
            if let cutoff = plan.deliveriesBefore {
                try db.cachedStatement(sql: """
                    DELETE FROM webhook_deliveries WHERE id IN (
                        SELECT id FROM webhook_deliveries WHERE created_at < ? LIMIT ?)
                    """).execute(arguments: [Rows.micros(cutoff), limit])
            }
            return deleted
        }
    }

    // MARK: Webhooks

    /// Schedules the webhook of a job that just reached a terminal `state`, if it has a
    /// callback URL: a delivery job (carrying the job's document as it is now) plus its
    /// record, in the caller's transaction.
    private static func scheduleWebhook(_ db: Database, _ batch: GroupCommitWriter.Batch, _ key: ChangeSet.JobKey,
                                        url: String?, state: JobState) throws {
        guard url != nil else { return }
        let job = try fetchJob(db, key.id, tenant: nil)
        guard let request = Webhook.deliveryJob(for: job), let url = job.callbackURL else { return }
        let now = Date()
        let delivery = Job(new: request, defaults: nil, now: now)
        try insert([delivery], db, batch)
        try db.cachedStatement(sql: """
            INSERT INTO webhook_deliveries(id, job_id, tenant, url, event, created_at) VALUES (?, ?, ?, ?, ?, ?)
            """).execute(arguments: [delivery.id.description, key.id.description, key.tenant, url,
                                     Webhook.eventType(job.state), Rows.micros(now)])
    }

    public func webhookDeliveries(of job: JobID, tenant: String?) async throws -> [WebhookDelivery] {
        try await read { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT d.id, d.url, d.event, d.created_at, d.attempts, j.state
                    FROM webhook_deliveries d LEFT JOIN jobs j ON j.id = d.id
                    WHERE d.job_id = ? AND (?2 IS NULL OR d.tenant = ?2)
                    ORDER BY d.id
                    """),
                arguments: [job.description, tenant])
            return try rows.map { row in
                guard let id = JobID(row[0] as String) else { throw Rows.CorruptRow(description: "bad delivery id") }
                let attempts = try JSON.decode([WebhookAttempt].self, from: Data((row[4] as String).utf8))
                return WebhookDelivery(id: id, jobID: job, url: row[1], event: row[2], createdAt: Rows.date(row[3]),
                                       state: (row[5] as String?).flatMap(JobState.init(rawValue:)), attempts: attempts)
            }
        }
    }

    public func recordWebhookAttempt(_ attempt: WebhookAttempt, delivery: JobID) async throws {
        let text = String(decoding: try JSON.encode(attempt), as: UTF8.self)
        try await writer.write(durable: false) { db, _ in
            try db.cachedStatement(sql: "UPDATE webhook_deliveries SET attempts = json_insert(attempts, '$[#]', json(?)) WHERE id = ?")
                .execute(arguments: [text, delivery.description])
        }
    }

    public func webhookSecret(tenant: String) async throws -> String {
        if let existing = try await read({ db in
            try String.fetchOne(db.cachedStatement(sql: "SELECT secret FROM webhook_secrets WHERE tenant = ?"), arguments: [tenant])
        }) { return existing }
        return try await writer.write(atomic: true) { db, _ in
            try db.execute(sql: "INSERT INTO webhook_secrets(tenant, secret) VALUES (?, ?) ON CONFLICT(tenant) DO NOTHING",
                           arguments: [tenant, Webhook.makeSecret()])
            return try String.fetchOne(db, sql: "SELECT secret FROM webhook_secrets WHERE tenant = ?", arguments: [tenant]) ?? ""
        }
    }

    // MARK: Reads

    public func job(_ id: JobID, tenant: String?) async throws -> Job? {
        try await read { db in
            do { return try Self.fetchJob(db, id, tenant: tenant) } catch SpoolError.notFound { return nil }
        }
    }

    public func list(_ filter: JobFilter) async throws -> JobPage {
        let limit = max(1, min(filter.limit, 1000))
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let tenant = filter.tenant { conditions.append("tenant = ?"); arguments += [tenant] }
        if let queue = filter.queue { conditions.append("queue = ?"); arguments += [queue] }
        if let state = filter.state { conditions.append("state = ?"); arguments += [state.rawValue] }
        if let kind = filter.kind { conditions.append("kind = ?"); arguments += [kind] }
        if let cursor = filter.cursor {
            guard let seq = Int64(cursor), seq > 0 else { throw SpoolError.invalid(field: "cursor", reason: "not a cursor from a previous page") }
            conditions.append("seq < ?"); arguments += [seq]
        }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let sql = "SELECT \(Rows.columns), seq FROM jobs \(whereClause) ORDER BY seq DESC LIMIT \(limit + 1)"
        let finalArguments = arguments
        return try await read { db in
            let rows = try Row.fetchAll(db, sql: sql, arguments: finalArguments)
            let page = rows.prefix(limit)
            let jobs = try page.map(Rows.job)
            let next: String? = rows.count > limit ? String(page.last![Rows.columnCount] as Int64) : nil
            return JobPage(jobs: jobs, nextCursor: next)
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
        try await writer.write(durable: false, atomic: true) { db, _ in
            try db.execute(
                sql: "DELETE FROM event_log WHERE seq IN (SELECT seq FROM event_log WHERE at < ? ORDER BY seq LIMIT ?)",
                arguments: [Rows.micros(before), limit])
            return db.changesCount
        }
    }

    // MARK: Helpers

    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        if closed.withLock({ $0 }) { throw SpoolError.unavailable(reason: "the store is closed") }
        do { return try await pool.read(body) } catch { throw Self.map(error) }
    }

    private static func fetchJob(_ db: Database, _ id: JobID, tenant: String?) throws -> Job {
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
        try await writer.write(durable: false, atomic: true) { db, batch in
            let insert = try db.makeStatement(sql: """
                INSERT INTO jobs (id, tenant, queue, kind, payload, priority, state, attempt, max_attempts, run_at,
                                  timeout_ms, created_at, started_at, finished_at, result)
                VALUES (?, 'default', ?, ?, '{}', 0, 'completed', 1, 1, ?, 60000, ?, ?, ?, 'null')
                """)
            let now = Date()
            let t = Rows.micros(now)
            for _ in 0..<count {
                try insert.execute(arguments: [JobID.make(now: now).description, queue, kind, t, t, t, t])
            }
            batch.move(queue: queue, tenant: NewJob.defaultTenant, from: nil, to: .completed, count: count)
        }
    }
}
