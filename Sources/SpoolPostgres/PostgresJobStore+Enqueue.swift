import Foundation
import Logging
import PostgresNIO
import SpoolCore

extension PostgresJobStore {
    // MARK: Enqueue

    public func enqueue(_ jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> [EnqueueResult] {
        if jobs.isEmpty { return [] }
        for job in jobs { try job.validateNames() }
        if jobs.count == 1, jobs[0].idempotencyKey == nil, jobs[0].dependsOn.isEmpty, jobs[0].batchID == nil {
            let request = jobs[0]
            return [try await enqueues.submit((Job(new: request, defaults: defaults[request.queue], now: Date()), depthLimits[request.queue]))]
        }
        return try await settlingKeyRaces {
            try await self.transaction { connection, changes in
                try await self.enqueue(jobs, defaults: defaults, depthLimits: depthLimits, connection, changes)
            }
        }
    }

    /// Runs `body` again when it lost an idempotency-key race: two requests with one new key in
    /// two processes, one insert loses on the unique index; run again, it finds the winner's.
    func settlingKeyRaces<T>(_ body: () async throws -> T) async throws -> T {
        for attempt in 1...3 {
            do {
                return try await body()
            } catch where Self.sqlState(error) == "23505" && attempt < 3 {
                continue
            }
        }
        throw SpoolError.unavailable(reason: "could not settle an idempotency key race")
    }

    /// Enqueues `jobs` in the caller's transaction (``EnqueuePlan``): idempotency keys, parents,
    /// depth limits, batches.
    func enqueue(_ jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int],
                 _ connection: PostgresConnection, _ changes: ChangeSet) async throws -> [EnqueueResult] {
        let plan = EnqueuePlan(jobs)
        var existing: [EnqueuePlan.Key: Job] = [:]
        for key in plan.keys {
            existing[key] = try await connection.jobs(
                "SELECT \(unescaped: PGRows.columns()) FROM spool_jobs WHERE tenant = \(key.tenant) AND idempotency_key = \(key.key)",
                logger: logger
            ).first
        }
        let parents = try await markParents(plan.externalParents(existing: existing), connection)
        let resolution = try plan.resolve(existing: existing, parents: parents, defaults: defaults, now: Date())
        // Backpressure: refuse the whole request if any queue would pass its limit (locks
        // taken in queue order).
        let adding = DepthLimit.adding(resolution.new)
        for queue in adding.keys.sorted() {
            guard let limit = depthLimits[queue] else { continue }
            try DepthLimit.check(queue: queue, current: try await lockedDepth(connection, queue: queue), adding: adding[queue]!, limit: limit)
        }
        try await insert(resolution.new, connection, changes)
        if resolution.usesWorkflows { try await writeWorkflows(resolution, connection, changes) }
        return resolution.results
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
    func lockedDepth(_ connection: PostgresConnection, queue: String) async throws -> Int {
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
}
