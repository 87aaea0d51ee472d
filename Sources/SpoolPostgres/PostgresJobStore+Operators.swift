import Foundation
import Logging
import PostgresNIO
import SpoolCore

extension PostgresJobStore {
    // MARK: Operators and clients

    /// The job, locked for this transaction, if `tenant` may see it.
    func lockedJob(_ connection: PostgresConnection, _ id: JobID, tenant: String?) async throws -> Job {
        guard let job = try await connection.jobs(
            "SELECT \(unescaped: PGRows.columns()) FROM spool_jobs WHERE id = \(id.uuid) FOR UPDATE", logger: logger
        ).first, tenant == nil || job.tenant == tenant else { throw SpoolError.notFound(id) }
        return job
    }

    func fetchJob(_ connection: PostgresConnection, _ id: JobID) async throws -> Job {
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
            var children = false
            for try await has in try await connection.query("""
                UPDATE spool_jobs SET state = 'cancelled', finished_at = now(), lease_token = NULL, lease_expires_at = NULL
                WHERE id = \(id.uuid) RETURNING has_children
                """, logger: logger).decode(Bool.self) { children = has }
            changes.transition(.init(job), from: job.state, to: .cancelled)
            if job.state == .processing { changes.signal(.jobCancelled(id)) }
            try await self.finished(.init(job), state: .cancelled, callbackURL: job.callbackURL, hasChildren: children,
                                    batchID: job.batchID, connection, changes)
            return try await self.fetchJob(connection, id)
        }
    }

    public func retry(_ id: JobID, tenant: String?, attempts: Int?) async throws -> Job {
        let logger = self.logger
        let grant = attempts.map(Int32.init)
        return try await transaction { connection, changes in
            let job = try await self.lockedJob(connection, id, tenant: tenant)
            guard job.state.canRetry else { throw SpoolError.invalidTransition(id: id, from: job.state, operation: "retry") }
            // A job with parents waits again for those not finished (their results are its input).
            let (next, left) = job.dependsOn.isEmpty ? (JobState.pending, 0)
                : try DependencyRules.afterRetry(id, parents: try await self.parentStates(of: id, connection), policy: job.onParentFailure)
            var children = false
            for try await has in try await connection.query("""
                UPDATE spool_jobs SET state = \(next.rawValue), attempt = CASE WHEN \(grant)::int IS NULL THEN 0 ELSE attempt END,
                                      max_attempts = COALESCE(attempt + \(grant)::int, max_attempts),
                                      run_at = now(), finished_at = NULL, result = NULL,
                                      progress_percent = NULL, progress_message = NULL, worker_id = NULL,
                                      cancel_reason = NULL, cancelled_by = NULL, parents_left = \(Int64(left))
                WHERE id = \(id.uuid) RETURNING has_children
                """, logger: logger).decode(Bool.self) { children = has }
            var key = ChangeSet.JobKey(job)
            if attempts == nil { key.attempt = 0 }
            changes.transition(key, from: job.state, to: next)
            if next == .pending { changes.signal(.workAvailable(queue: job.queue)) }
            try await self.reopened(id, hasChildren: children, batchID: job.batchID, connection, changes)
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

    public func retryFailed(queue: String, tenant: String?, attempts: Int?) async throws -> Int {
        try NewJob.validateQueue(queue)
        let logger = self.logger
        let grant = attempts.map(Int32.init)
        return try await transaction { connection, changes in
            let rows = try await connection.keys("""
                UPDATE spool_jobs SET state = 'pending', attempt = CASE WHEN \(grant)::int IS NULL THEN 0 ELSE attempt END,
                                      max_attempts = COALESCE(attempt + \(grant)::int, max_attempts),
                                      run_at = now(), finished_at = NULL, worker_id = NULL
                WHERE queue = \(queue) AND state = 'failed' AND (\(tenant)::text IS NULL OR tenant = \(tenant)) AND depends_on IS NULL
                RETURNING id, tenant, kind, attempt, queue, has_children, batch_id
                """, logger: logger)
            for (key, row) in rows {
                changes.transition(key, from: .failed, to: .pending)
                let (children, batch) = try row.makeRandomAccess().decodeTail((Bool, UUID?).self, from: 5)
                if children || batch != nil {
                    try await self.reopened(key.id, hasChildren: children, batchID: batch.map(JobID.init(uuid:)), connection, changes)
                }
            }
            // Jobs with parents one by one, as a retry by hand: they wait for unfinished parents;
            // those whose parent failed stay failed (retrying the parent re-arms them).
            var redriven = rows.count
            var withParents: [Job] = []
            for job in try await connection.jobs("""
                SELECT \(unescaped: PGRows.columns()) FROM spool_jobs
                WHERE queue = \(queue) AND state = 'failed' AND (\(tenant)::text IS NULL OR tenant = \(tenant)) AND depends_on IS NOT NULL
                ORDER BY id FOR UPDATE
                """, logger: logger) { withParents.append(job) }
            for job in withParents {
                let parents = try await self.parentStates(of: job.id, connection)
                guard let (next, left) = try? DependencyRules.afterRetry(job.id, parents: parents, policy: job.onParentFailure) else { continue }
                var children = false
                for try await has in try await connection.query("""
                    UPDATE spool_jobs SET state = \(next.rawValue), attempt = CASE WHEN \(grant)::int IS NULL THEN 0 ELSE attempt END,
                                          max_attempts = COALESCE(attempt + \(grant)::int, max_attempts),
                                          run_at = now(), finished_at = NULL, worker_id = NULL,
                                          parents_left = \(Int64(left))
                    WHERE id = \(job.id.uuid) RETURNING has_children
                    """, logger: logger).decode(Bool.self) { children = has }
                var key = ChangeSet.JobKey(job)
                if attempts == nil { key.attempt = 0 }
                changes.transition(key, from: .failed, to: next)
                try await self.reopened(job.id, hasChildren: children, batchID: job.batchID, connection, changes)
                redriven += 1
            }
            if redriven > 0 { changes.signal(.workAvailable(queue: queue)) }
            return redriven
        }
    }

    public func purge(queue: String, tenant: String?) async throws -> Int {
        try NewJob.validateQueue(queue)
        let logger = self.logger
        return try await transaction { connection, changes in
            let rows = try await connection.keys("""
                DELETE FROM spool_jobs WHERE queue = \(queue) AND state IN ('pending', 'scheduled')
                    AND (\(tenant)::text IS NULL OR tenant = \(tenant))
                RETURNING id, tenant, kind, attempt, queue, state, has_children, batch_id
                """, logger: logger)
            for (key, row) in rows {
                let cells = row.makeRandomAccess()
                let state = try cells[5].decode(String.self)
                changes.transition(key, from: JobState(rawValue: state), to: nil)
                // Purged counts as cancelled for its children and its batch.
                let (children, batch) = try cells.decodeTail((Bool, UUID?).self, from: 6)
                if children || batch != nil {
                    try await self.finished(key, state: .cancelled, callbackURL: nil, hasChildren: children,
                                            batchID: batch.map(JobID.init(uuid:)), connection, changes)
                }
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
            var spent: [UUID] = []
            let plan = PrunePlan(completedBefore: completedBefore, failedBefore: failedBefore)
            for (state, cutoff) in plan.steps where deleted < limit {
                // Ids are time-ordered: the range scan on the primary key visits only old jobs.
                for try await row in try await connection.query("""
                    WITH old AS MATERIALIZED (
                        SELECT id FROM spool_jobs WHERE id < \(JobID.lowerBound(at: cutoff).uuid) AND state = \(state.rawValue)
                            AND finished_at < \(cutoff) LIMIT \(Int64(limit - deleted)) FOR UPDATE SKIP LOCKED)
                    DELETE FROM spool_jobs USING old WHERE spool_jobs.id = old.id AND spool_jobs.state = \(state.rawValue)
                    RETURNING spool_jobs.queue, spool_jobs.tenant, spool_jobs.id, spool_jobs.depends_on IS NOT NULL OR spool_jobs.has_children
                    """, logger: logger).decode((String, String, UUID, Bool).self) {
                    let (queue, tenant, id, linked) = row
                    changes.move(queue: queue, tenant: tenant, from: state, to: nil)
                    if linked { spent.append(id) }
                    deleted += 1
                }
            }
            // A finished job's edges are spent (its children were released or cancelled).
            if !spent.isEmpty {
                try await connection.query("""
                    DELETE FROM spool_job_dependencies WHERE parent_id = ANY(\(spent)::uuid[]) OR child_id = ANY(\(spent)::uuid[])
                    """, logger: logger)
            }
            if let cutoff = completedBefore {
                try await connection.query("""
                    DELETE FROM spool_batches WHERE id IN (SELECT id FROM spool_batches WHERE finished_at < \(cutoff) LIMIT \(Int64(limit)))
                    """, logger: logger)
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
}
