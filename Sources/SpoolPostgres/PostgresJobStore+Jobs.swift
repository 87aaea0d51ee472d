import Foundation
import Logging
import PostgresNIO
import SpoolCore

// The `JobStore` operations. Every rule of the protocol (fencing by lease token, tenant
// filters, all-or-nothing batches) is kept in SQL, so that many processes may run them at once.
extension PostgresJobStore {
    // MARK: Enqueue

    public func enqueue(_ jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> [EnqueueResult] {
        if jobs.isEmpty { return [] }
        for job in jobs { try job.validateNames() }
        if jobs.count == 1, jobs[0].idempotencyKey == nil {
            let request = jobs[0]
            return [try await enqueues.submit((Job(new: request, defaults: defaults[request.queue], now: Date()), depthLimits[request.queue]))]
        }
        // Two requests with one new key in two processes: one insert loses on the unique index;
        // run it again and it finds the winner's job.
        for attempt in 1...3 {
            do {
                return try await enqueueTransaction(jobs, defaults: defaults, depthLimits: depthLimits)
            } catch where Self.sqlState(error) == "23505" && attempt < 3 {
                continue
            }
        }
        throw SpoolError.unavailable(reason: "could not settle an idempotency key race")
    }

    private func enqueueTransaction(_ jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> [EnqueueResult] {
        let logger = self.logger
        return try await transaction { connection, changes in
            let plan = EnqueuePlan(jobs)
            var existing: [EnqueuePlan.Key: Job] = [:]
            for key in plan.keys {
                existing[key] = try await connection.jobs(
                    "SELECT \(unescaped: PGRows.columns()) FROM spool_jobs WHERE tenant = \(key.tenant) AND idempotency_key = \(key.key)",
                    logger: logger
                ).first
            }
            let (results, new) = try plan.resolve(existing: existing, defaults: defaults, now: Date())
            // Backpressure: refuse the whole request if any queue would pass its limit (locks
            // taken in queue order).
            let adding = DepthLimit.adding(new)
            for queue in adding.keys.sorted() {
                guard let limit = depthLimits[queue] else { continue }
                try DepthLimit.check(queue: queue, current: try await self.lockedDepth(connection, queue: queue), adding: adding[queue]!, limit: limit)
            }
            try await self.insert(new, connection, changes)
            return results
        }
    }

    /// Single enqueues gathered from many callers, in one transaction; those past their queue's
    /// depth limit are refused alone.
    func insertMany(_ items: [(Job, Int?)]) async throws -> [Result<EnqueueResult, SpoolError>] {
        if items.allSatisfy({ $0.1 == nil }) {
            try await insertAutocommit(items.map(\.0))
            return items.map { .success(EnqueueResult(job: $0.0, replayed: false)) }
        }
        return try await transaction { connection, changes in
            var depth: [String: Int] = [:]
            for queue in DepthLimit.limitedQueues(items) {
                depth[queue] = try await self.lockedDepth(connection, queue: queue)
            }
            let (accepted, results) = DepthLimit.admit(items, depth: depth)
            try await self.insert(accepted, connection, changes)
            return results
        }
    }

    /// Waiting jobs of `queue`, under a lock every enqueue to a limited queue takes: two
    /// processes cannot both see room for the last slot.
    private func lockedDepth(_ connection: PostgresConnection, queue: String) async throws -> Int {
        try await connection.query("SELECT pg_advisory_xact_lock(\(Self.depthLockClass), hashtext(\(queue)))", logger: logger).drain()
        var depth = 0
        for try await n in try await connection.query(
            """
            SELECT coalesce(sum(n), 0)::int8 FROM (
                SELECT n FROM spool_queue_counts WHERE queue = \(queue) AND state IN ('pending', 'scheduled')
                UNION ALL SELECT n FROM spool_count_deltas WHERE queue = \(queue) AND state IN ('pending', 'scheduled')) c
            """,
            logger: logger
        ).decode(Int64.self) { depth = Int(n) }
        return depth
    }

    /// Writes new jobs with one statement (arrays unnested in order).
    func insert(_ jobs: [Job], _ connection: PostgresConnection, _ changes: ChangeSet) async throws {
        if jobs.isEmpty { return }
        for job in jobs {
            changes.transition(.init(job), from: nil, to: job.state)
            changes.signal(.workAvailable(queue: job.queue))
        }
        try await connection.query(PostgresQuery(unsafeSQL: Self.insertSQL, binds: Self.insertBindings(jobs)), logger: logger)
    }

    /// `INSERT INTO spool_jobs ...` of the jobs given by ``insertBindings(_:)`` as $1...$14 (arrays
    /// unnested in order). Fixed text, so that it can be a prepared statement.
    static let insertSQL = """
        INSERT INTO spool_jobs (id, tenant, queue, kind, payload, priority, state, max_attempts, run_at, timeout_ms,
                                created_at, idempotency_key, callback_url, tags)
        SELECT id, tenant, queue, kind, payload, priority, state, max_attempts, run_at, timeout_ms,
               created_at, NULLIF(key, ''), NULLIF(callback, ''), tags::jsonb
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::int8[],
                    $9::timestamptz[], $10::int8[], $11::timestamptz[], $12::text[], $13::text[], $14::text[])
             WITH ORDINALITY AS v(id, tenant, queue, kind, payload, priority, state, max_attempts, run_at, timeout_ms,
                                  created_at, key, callback, tags, n)
        ORDER BY n
        """

    /// The 14 arrays ``insertSQL`` takes. Arrays cannot hold NULL here: an empty string stands
    /// for none (neither can be empty).
    static func insertBindings(_ jobs: [Job]) -> PostgresBindings {
        var binds = PostgresBindings(capacity: 14)
        binds.append(jobs.map(\.id.uuid)); binds.append(jobs.map(\.tenant)); binds.append(jobs.map(\.queue))
        binds.append(jobs.map(\.kind)); binds.append(jobs.map { String(decoding: $0.payload, as: UTF8.self) })
        binds.append(jobs.map { Int64($0.priority) }); binds.append(jobs.map(\.state.rawValue))
        binds.append(jobs.map { Int64($0.maxAttempts) }); binds.append(jobs.map(\.runAt))
        binds.append(jobs.map { Int64($0.timeout.seconds * 1000) }); binds.append(jobs.map(\.createdAt))
        binds.append(jobs.map { $0.idempotencyKey ?? "" }); binds.append(jobs.map { $0.callbackURL ?? "" })
        binds.append(jobs.map { PGRows.jsonText($0.tags) })
        return binds
    }

    // MARK: Workers

    public func lease(queue: String, limit: Int, workerID: String, leaseDuration: Duration) async throws -> LeaseBatch {
        try NewJob.validateQueue(queue)
        var (batch, promoted) = try await leaseAutocommit(queue: queue, limit: limit, workerID: workerID, leaseDuration: leaseDuration)
        // Jobs that just became due are leased by a second statement (one statement cannot see
        // the rows it changed).
        if promoted > 0 && batch.jobs.count < limit {
            let (more, _) = try await leaseAutocommit(queue: queue, limit: limit - batch.jobs.count, workerID: workerID, leaseDuration: leaseDuration)
            batch.jobs = (batch.jobs + more.jobs).sorted { ($0.job.priority, $1.job.id) > ($1.job.priority, $0.job.id) }
            batch.nextRunAt = more.nextRunAt
        }
        return batch
    }

    public func heartbeat(_ leases: [(JobID, LeaseToken)], leaseDuration: Duration) async throws -> Set<JobID> {
        if leases.isEmpty { return [] }
        let logger = self.logger
        let ids = leases.map(\.0.uuid), tokens = leases.map(\.1.value)
        let leaseMs = Int64(leaseDuration.seconds * 1000)
        let held = try await read { client in
            var held = Set<JobID>()
            for try await id in try await client.query("""
                UPDATE spool_jobs SET lease_expires_at = now() + \(leaseMs) * interval '1 millisecond'
                FROM unnest(\(ids)::uuid[], \(tokens)::text[]) AS v(id, token)
                WHERE spool_jobs.id = v.id AND spool_jobs.state = 'processing' AND spool_jobs.lease_token = v.token
                RETURNING spool_jobs.id
                """, logger: logger).decode(UUID.self) { held.insert(JobID(uuid: id)) }
            return held
        }
        return Set(leases.map(\.0)).subtracting(held)
    }

    public func reportProgress(_ id: JobID, lease: LeaseToken, progress: JobProgress) async throws {
        let logger = self.logger
        try await transaction { connection, changes in
            guard let (key, _) = try await connection.keys("""
                UPDATE spool_jobs SET progress_percent = \(progress.percent), progress_message = \(progress.message)
                WHERE id = \(id.uuid) AND state = 'processing' AND lease_token = \(lease.value)
                RETURNING id, tenant, kind, attempt, queue
                """, logger: logger).first else { throw SpoolError.leaseLost(id) }
            changes.progress(key, progress)
        }
    }

    public func complete(_ id: JobID, lease: LeaseToken, result: Data?) async throws {
        if let result { try JobResult.validate(result) }  // a bad result must not fail the batch it would join
        try await completions.submit((id, lease, result.map { String(decoding: $0, as: UTF8.self) }))
    }

    /// Completes many jobs in one statement, checking each lease token (fencing). Answers are
    /// matched by job and token: a stale and a current lease of one job may share a batch.
    func completeMany(_ items: [(JobID, LeaseToken, String?)]) async throws -> [Result<Void, SpoolError>] {
        let fast = try await completeAutocommit(items)
        let rest = items.filter { !fast.contains(HeldLease($0.0, $0.1)) }
        if rest.isEmpty { return items.map { _ in .success(()) } }
        let slow: Result<Set<HeldLease>, SpoolError>
        do {
            slow = .success(try await completeInTransaction(rest))
        } catch {
            // What the fast path committed stays committed; only the rest failed.
            slow = .failure((error as? SpoolError) ?? .unavailable(reason: "\(error)"))
        }
        return items.map { item in
            let lease = HeldLease(item.0, item.1)
            if fast.contains(lease) { return .success(()) }
            switch slow {
            case .success(let done): return done.contains(lease) ? .success(()) : .failure(.leaseLost(item.0))
            case .failure(let error): return .failure(error)
            }
        }
    }

    /// Completions that schedule webhooks (or whose lease is gone), in a transaction.
    private func completeInTransaction(_ items: [(JobID, LeaseToken, String?)]) async throws -> Set<HeldLease> {
        let logger = self.logger
        let statement = CompleteStatement(items)
        // The completion UPDATE of the fast path, for any callback, returning what the webhook
        // and the events need.
        let query = PostgresQuery(unsafeSQL: """
            \(CompleteStatement.update)
            RETURNING spool_jobs.id, spool_jobs.tenant, spool_jobs.kind, spool_jobs.attempt, spool_jobs.queue,
                      spool_jobs.result, spool_jobs.callback_url, v.token
            """, binds: statement.makeBindings())
        return try await transaction { connection, changes in
            var done = Set<HeldLease>()
            for (key, row) in try await connection.keys(query, logger: logger) {
                let (result, callback, token) = try row.makeRandomAccess().decodeTail((String?, String?, String).self, from: 5)
                done.insert(HeldLease(key.id, LeaseToken(token)))
                changes.transition(key, from: .processing, to: .completed, result: result.map { Data($0.utf8) })
                if callback != nil { try await self.scheduleWebhook(connection, changes, key.id) }
            }
            return done
        }
    }

    public func fail(_ id: JobID, lease: LeaseToken, error: AttemptError, retryAt: Date?) async throws {
        let logger = self.logger
        let errorJSON = String(decoding: try JSON.encode(error), as: UTF8.self)
        try await transaction { connection, changes in
            let now = Date()
            let state: JobState = retryAt.map { $0 > now ? .scheduled : .pending } ?? .failed
            let finishedAt: Date? = state == .failed ? now : nil
            guard let (key, row) = try await connection.keys("""
                UPDATE spool_jobs SET state = \(state.rawValue), run_at = coalesce(\(retryAt)::timestamptz, run_at),
                       finished_at = \(finishedAt)::timestamptz, lease_token = NULL, lease_expires_at = NULL,
                       errors = errors || jsonb_build_array(\(errorJSON)::jsonb)
                WHERE id = \(id.uuid) AND state = 'processing' AND lease_token = \(lease.value)
                RETURNING id, tenant, kind, attempt, queue, callback_url
                """, logger: logger).first else { throw SpoolError.leaseLost(id) }
            changes.transition(key, from: .processing, to: state, error: error)
            if state != .failed { changes.signal(.workAvailable(queue: key.queue)) }
            if state == .failed, try row.makeRandomAccess()[5].decode(String?.self) != nil {
                try await self.scheduleWebhook(connection, changes, key.id)
            }
        }
    }

    public func release(_ id: JobID, lease: LeaseToken) async throws {
        let logger = self.logger
        try await transaction { connection, changes in
            guard let (key, _) = try await connection.keys("""
                UPDATE spool_jobs SET state = 'pending', attempt = greatest(0, attempt - 1), lease_token = NULL,
                       lease_expires_at = NULL, worker_id = NULL
                WHERE id = \(id.uuid) AND state = 'processing' AND lease_token = \(lease.value)
                RETURNING id, tenant, kind, attempt, queue
                """, logger: logger).first else { throw SpoolError.leaseLost(id) }
            changes.transition(key, from: .processing, to: .pending)
            changes.signal(.workAvailable(queue: key.queue))
        }
    }

    public func rescueExpiredLeases() async throws -> Int {
        let logger = self.logger
        return try await transaction { connection, changes in
            let rows = try await connection.keys("""
                WITH expired AS MATERIALIZED (
                    SELECT id FROM spool_jobs WHERE state = 'processing' AND lease_expires_at < now()
                    ORDER BY lease_expires_at LIMIT \(unescaped: String(LeaseRescue.batchLimit)) FOR UPDATE SKIP LOCKED)
                UPDATE spool_jobs SET
                    state = CASE WHEN attempt < max_attempts THEN 'pending' ELSE 'failed' END,
                    finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE now() END,
                    errors = errors || jsonb_build_array(jsonb_build_object(
                        'attempt', attempt,
                        'message', \(LeaseRescue.messagePrefix)::text || coalesce(worker_id, '?') || \(LeaseRescue.messageSuffix)::text,
                        'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                        'reason', \(LeaseRescue.reason)::text)),
                    lease_token = NULL, lease_expires_at = NULL
                FROM expired WHERE spool_jobs.id = expired.id
                RETURNING spool_jobs.id, tenant, kind, attempt, queue, state, worker_id, callback_url
                """, logger: logger)
            for (key, row) in rows {
                let (stateText, worker, callback) = try row.makeRandomAccess().decodeTail((String, String?, String?).self, from: 5)
                let state: JobState = stateText == "pending" ? .pending : .failed
                let error = LeaseRescue.error(attempt: key.attempt, worker: worker, at: Date())
                changes.transition(key, from: .processing, to: state, error: error)
                if state == .pending { changes.signal(.workAvailable(queue: key.queue)) }
                if state == .failed, callback != nil { try await self.scheduleWebhook(connection, changes, key.id) }
            }
            return rows.count
        }
    }

    // MARK: Operators and clients

    /// The job, locked for this transaction, if `tenant` may see it.
    private func lockedJob(_ connection: PostgresConnection, _ id: JobID, tenant: String?) async throws -> Job {
        guard let job = try await connection.jobs(
            "SELECT \(unescaped: PGRows.columns()) FROM spool_jobs WHERE id = \(id.uuid) FOR UPDATE", logger: logger
        ).first, tenant == nil || job.tenant == tenant else { throw SpoolError.notFound(id) }
        return job
    }

    private func fetchJob(_ connection: PostgresConnection, _ id: JobID) async throws -> Job {
        guard let job = try await connection.jobs(
            "SELECT \(unescaped: PGRows.columns()) FROM spool_jobs WHERE id = \(id.uuid)", logger: logger
        ).first else { throw SpoolError.notFound(id) }
        return job
    }

    public func cancel(_ id: JobID, tenant: String?) async throws -> Job {
        let logger = self.logger
        return try await transaction { connection, changes in
            let job = try await self.lockedJob(connection, id, tenant: tenant)
            guard job.state.canCancel else { throw SpoolError.invalidTransition(id: id, from: job.state, operation: "cancel") }
            try await connection.query("""
                UPDATE spool_jobs SET state = 'cancelled', finished_at = now(), lease_token = NULL, lease_expires_at = NULL
                WHERE id = \(id.uuid)
                """, logger: logger)
            changes.transition(.init(job), from: job.state, to: .cancelled)
            if job.state == .processing { changes.signal(.jobCancelled(id)) }
            if job.callbackURL != nil { try await self.scheduleWebhook(connection, changes, id) }
            return try await self.fetchJob(connection, id)
        }
    }

    public func retry(_ id: JobID, tenant: String?) async throws -> Job {
        let logger = self.logger
        return try await transaction { connection, changes in
            let job = try await self.lockedJob(connection, id, tenant: tenant)
            guard job.state.canRetry else { throw SpoolError.invalidTransition(id: id, from: job.state, operation: "retry") }
            try await connection.query("""
                UPDATE spool_jobs SET state = 'pending', attempt = 0, run_at = now(), finished_at = NULL, result = NULL,
                                      progress_percent = NULL, progress_message = NULL, worker_id = NULL
                WHERE id = \(id.uuid)
                """, logger: logger)
            var key = ChangeSet.JobKey(job)
            key.attempt = 0
            changes.transition(key, from: job.state, to: .pending)
            changes.signal(.workAvailable(queue: job.queue))
            return try await self.fetchJob(connection, id)
        }
    }

    public func delete(_ id: JobID, tenant: String?) async throws {
        let logger = self.logger
        try await transaction { connection, changes in
            let job = try await self.lockedJob(connection, id, tenant: tenant)
            guard job.state.isFinished else { throw SpoolError.invalidTransition(id: id, from: job.state, operation: "delete") }
            try await connection.query("DELETE FROM spool_jobs WHERE id = \(id.uuid)", logger: logger)
            changes.transition(.init(job), from: job.state, to: nil)
        }
    }

    public func retryFailed(queue: String, tenant: String?) async throws -> Int {
        try NewJob.validateQueue(queue)
        let logger = self.logger
        return try await transaction { connection, changes in
            let rows = try await connection.keys("""
                UPDATE spool_jobs SET state = 'pending', attempt = 0, run_at = now(), finished_at = NULL, worker_id = NULL
                WHERE queue = \(queue) AND state = 'failed' AND (\(tenant)::text IS NULL OR tenant = \(tenant))
                RETURNING id, tenant, kind, attempt, queue
                """, logger: logger)
            for (key, _) in rows { changes.transition(key, from: .failed, to: .pending) }
            if !rows.isEmpty { changes.signal(.workAvailable(queue: queue)) }
            return rows.count
        }
    }

    public func purge(queue: String, tenant: String?) async throws -> Int {
        try NewJob.validateQueue(queue)
        let logger = self.logger
        return try await transaction { connection, changes in
            let rows = try await connection.keys("""
                DELETE FROM spool_jobs WHERE queue = \(queue) AND state IN ('pending', 'scheduled')
                    AND (\(tenant)::text IS NULL OR tenant = \(tenant))
                RETURNING id, tenant, kind, attempt, queue, state
                """, logger: logger)
            for (key, row) in rows {
                let state = try row.makeRandomAccess()[5].decode(String.self)
                changes.transition(key, from: JobState(rawValue: state), to: nil)
            }
            return rows.count
        }
    }

    public func setPaused(_ paused: Bool, queue: String) async throws {
        try NewJob.validateQueue(queue)
        let logger = self.logger
        try await transaction { connection, changes in
            try await connection.query("""
                INSERT INTO spool_queues (name, paused) VALUES (\(queue), \(paused))
                ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
                """, logger: logger)
            if !paused { changes.signal(.queueResumed(queue: queue)) }
        }
    }

    public func prune(completedBefore: Date?, failedBefore: Date?, limit: Int) async throws -> Int {
        let logger = self.logger
        return try await transaction { connection, changes in
            var deleted = 0
            let plan = PrunePlan(completedBefore: completedBefore, failedBefore: failedBefore)
            for (state, cutoff) in plan.steps where deleted < limit {
                // Ids are time-ordered: the range scan on the primary key visits only old jobs.
                for try await (queue, tenant) in try await connection.query("""
                    WITH old AS MATERIALIZED (
                        SELECT id FROM spool_jobs WHERE id < \(JobID.lowerBound(at: cutoff).uuid) AND state = \(state.rawValue)
                            AND finished_at < \(cutoff) LIMIT \(Int64(limit - deleted)) FOR UPDATE SKIP LOCKED)
                    DELETE FROM spool_jobs USING old WHERE spool_jobs.id = old.id AND spool_jobs.state = \(state.rawValue)
                    RETURNING spool_jobs.queue, spool_jobs.tenant
                    """, logger: logger).decode((String, String).self) {
                    changes.move(queue: queue, tenant: tenant, from: state, to: nil)
                    deleted += 1
                }
            }
            if let cutoff = plan.deliveriesBefore {
                try await connection.query("""
                    DELETE FROM spool_webhook_deliveries WHERE id IN (
                        SELECT id FROM spool_webhook_deliveries WHERE created_at < \(cutoff) LIMIT \(Int64(limit)))
                    """, logger: logger)
            }
            return deleted
        }
    }

    // MARK: Reads

    public func job(_ id: JobID, tenant: String?) async throws -> Job? {
        let logger = self.logger
        return try await read { client in
            var found: Job?
            for try await row in try await client.query(
                "SELECT \(unescaped: PGRows.columns()) FROM spool_jobs WHERE id = \(id.uuid)", logger: logger
            ) { found = try PGRows.job(row) }
            if let tenant, found?.tenant != tenant { return nil }
            return found
        }
    }

    public func list(_ filter: JobFilter) async throws -> JobPage {
        let limit = max(1, min(filter.limit, 1000))
        var conditions: [String] = []
        var binds = PostgresBindings()
        func add(_ condition: String, _ value: String) {
            binds.append(value)
            conditions.append(condition.replacingOccurrences(of: "$", with: "$\(binds.count)"))
        }
        if let tenant = filter.tenant { add("tenant = $", tenant) }
        if let queue = filter.queue { add("queue = $", queue) }
        if let state = filter.state { add("state = $", state.rawValue) }
        if let kind = filter.kind { add("kind = $", kind) }
        if let cursor = filter.cursor {
            guard let seq = Int64(cursor), seq > 0 else { throw SpoolError.invalid(field: "cursor", reason: "not a cursor from a previous page") }
            binds.append(seq)
            conditions.append("seq < $\(binds.count)")
        }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let query = PostgresQuery(
            unsafeSQL: "SELECT \(PGRows.columns()), seq FROM spool_jobs \(whereClause) ORDER BY seq DESC LIMIT \(limit + 1)",
            binds: binds)
        let logger = self.logger
        return try await read { client in
            var rows: [(Job, Int64)] = []
            for try await row in try await client.query(query, logger: logger) {
                rows.append((try PGRows.job(row), try row.makeRandomAccess()[23].decode(Int64.self)))
            }
            let page = rows.prefix(limit)
            return JobPage(jobs: page.map(\.0), nextCursor: rows.count > limit ? String(page.last!.1) : nil)
        }
    }

    public func queueStats(tenant: String?) async throws -> [QueueStats] {
        let logger = self.logger
        return try await read { client in
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
        return try await read { client in
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
        func lastBeforeGap() async throws -> (seq: Int64, gap: Bool, newest: Int64, snapshot: String) {
            try await read { client in
                var answer: (Int64, Bool, Int64, String) = (0, false, 0, "")
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
                           pg_current_snapshot()::text
                    """, logger: logger).decode((Int64, Bool, Int64, String).self) { answer = row }
                return answer
            }
        }
        let first = try await lastBeforeGap()
        // A gap above the settled mark: settle it if it can be, then look again.
        guard first.gap, try await settle(first.snapshot, through: first.newest) else { return first.seq }
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
            return n
        }
    }

    // MARK: Webhooks

    /// Schedules the webhook of a job that just reached a terminal state: a delivery job
    /// carrying its document, and the delivery's record, in the caller's transaction.
    private func scheduleWebhook(_ connection: PostgresConnection, _ changes: ChangeSet, _ id: JobID) async throws {
        let job = try await fetchJob(connection, id)
        guard let request = Webhook.deliveryJob(for: job), let url = job.callbackURL else { return }
        let delivery = Job(new: request, defaults: nil, now: Date())
        try await insert([delivery], connection, changes)
        try await connection.query("""
            INSERT INTO spool_webhook_deliveries (id, job_id, tenant, url, event, created_at)
            VALUES (\(delivery.id.uuid), \(id.uuid), \(job.tenant), \(url), \(Webhook.eventType(job.state)), now())
            """, logger: logger)
    }

    public func webhookDeliveries(of job: JobID, tenant: String?) async throws -> [WebhookDelivery] {
        let logger = self.logger
        return try await read { client in
            var deliveries: [WebhookDelivery] = []
            for try await (id, url, event, createdAt, attempts, state) in try await client.query("""
                SELECT d.id, d.url, d.event, d.created_at, d.attempts::text, j.state
                FROM spool_webhook_deliveries d LEFT JOIN spool_jobs j ON j.id = d.id
                WHERE d.job_id = \(job.uuid) AND (\(tenant)::text IS NULL OR d.tenant = \(tenant))
                ORDER BY d.id
                """, logger: logger).decode((UUID, String, String, Date, String, String?).self) {
                deliveries.append(WebhookDelivery(
                    id: JobID(uuid: id), jobID: job, url: url, event: event, createdAt: createdAt,
                    state: state.flatMap(JobState.init(rawValue:)),
                    attempts: try JSON.decode([WebhookAttempt].self, from: Data(attempts.utf8))))
            }
            return deliveries
        }
    }

    public func recordWebhookAttempt(_ attempt: WebhookAttempt, delivery: JobID) async throws {
        let text = String(decoding: try JSON.encode(attempt), as: UTF8.self)
        let logger = self.logger
        try await read { client in
            try await client.query("""
                UPDATE spool_webhook_deliveries SET attempts = attempts || jsonb_build_array(\(text)::jsonb) WHERE id = \(delivery.uuid)
                """, logger: logger).drain()
        }
    }

    public func webhookSecret(tenant: String) async throws -> String {
        let logger = self.logger
        let fresh = Webhook.makeSecret()
        return try await transaction { connection, _ in
            try await connection.query("""
                INSERT INTO spool_webhook_secrets (tenant, secret) VALUES (\(tenant), \(fresh)) ON CONFLICT (tenant) DO NOTHING
                """, logger: logger)
            var secret = ""
            for try await s in try await connection.query(
                "SELECT secret FROM spool_webhook_secrets WHERE tenant = \(tenant)", logger: logger
            ).decode(String.self) { secret = s }
            return secret
        }
    }

    // MARK: Leadership

    public func claimLeadership(of duty: String, holder: String, for ttl: Duration) async throws -> Bool {
        let logger = self.logger
        let ttlMs = Int64(ttl.seconds * 1000)
        return try await transaction { connection, _ in
            var won = false
            for try await _ in try await connection.query("""
                INSERT INTO spool_leaders (duty, holder, expires_at) VALUES (\(duty), \(holder), now() + \(ttlMs) * interval '1 millisecond')
                ON CONFLICT (duty) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                WHERE spool_leaders.holder = excluded.holder OR spool_leaders.expires_at < now()
                RETURNING holder
                """, logger: logger) { won = true }
            return won
        }
    }

    public func resignLeadership(of duty: String, holder: String) async throws {
        let logger = self.logger
        try await read { client in
            try await client.query("DELETE FROM spool_leaders WHERE duty = \(duty) AND holder = \(holder)", logger: logger).drain()
        }
    }
}

extension PostgresRandomAccessRow {
    /// Decodes the columns from `index` on (after a job key's five).
    func decodeTail<A: PostgresDecodable, B: PostgresDecodable>(_: (A, B).Type, from index: Int) throws -> (A, B) {
        (try self[index].decode(A.self), try self[index + 1].decode(B.self))
    }

    func decodeTail<A: PostgresDecodable, B: PostgresDecodable, C: PostgresDecodable>(_: (A, B, C).Type, from index: Int) throws -> (A, B, C) {
        (try self[index].decode(A.self), try self[index + 1].decode(B.self), try self[index + 2].decode(C.self))
    }
}
