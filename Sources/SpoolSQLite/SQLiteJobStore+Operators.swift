import Foundation
import GRDB
import SpoolCore
import Synchronization

extension SQLiteJobStore {
    // MARK: Operators and clients

    public func cancel(_ id: JobID, tenant: String?) async throws -> Job {
        try await writer.write() { db, batch in
            let job = try Self.fetchJob(db, id, tenant: tenant)
            guard job.state.canCancel else { throw SpoolError.invalidTransition(id: id, from: job.state, operation: "cancel") }
            let hasChildren = try Bool.fetchOne(db, sql: """
                UPDATE jobs SET state = 'cancelled', finished_at = ?, lease_token = NULL, lease_expires_at = NULL WHERE id = ?
                RETURNING has_children
                """, arguments: [Rows.micros(Date()), id.description]) ?? false
            batch.transition(.init(job), from: job.state, to: .cancelled)
            if job.state == .processing { batch.signal(.jobCancelled(id)) }
            try Self.finished(.init(job), state: .cancelled, callbackURL: job.callbackURL, hasChildren: hasChildren, batchID: job.batchID, db, batch)
            return try Self.fetchJob(db, id, tenant: tenant)
        }
    }

    public func retry(_ id: JobID, tenant: String?, attempts: Int?) async throws -> Job {
        try await writer.write() { db, batch in
            let job = try Self.fetchJob(db, id, tenant: tenant)
            guard job.state.canRetry else { throw SpoolError.invalidTransition(id: id, from: job.state, operation: "retry") }
            // A job with parents waits again for those not finished (their results are its input).
            let (next, left) = job.dependsOn.isEmpty ? (JobState.pending, 0)
                : try DependencyRules.afterRetry(id, parents: try Self.parentStates(of: id, db), policy: job.onParentFailure)
            let hasChildren = try Bool.fetchOne(db, sql: """
                UPDATE jobs SET state = ?, attempt = CASE WHEN ? IS NULL THEN 0 ELSE attempt END,
                                max_attempts = COALESCE(attempt + ?, max_attempts), run_at = ?, finished_at = NULL, result = NULL,
                                progress_percent = NULL, progress_message = NULL, worker_id = NULL,
                                cancel_reason = NULL, cancelled_by = NULL, parents_left = ?
                WHERE id = ?
                RETURNING has_children
                """, arguments: [next.rawValue, attempts, attempts, Rows.micros(Date()), left, id.description]) ?? false
            var key = ChangeSet.JobKey(job)
            if attempts == nil { key.attempt = 0 }
            batch.transition(key, from: job.state, to: next)
            if next == .pending { batch.signal(.workAvailable(queue: job.queue)) }
            try Self.reopened(id, hasChildren: hasChildren, batchID: job.batchID, db, batch)
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

    public func retryFailed(queue: String, tenant: String?, attempts: Int?) async throws -> Int {
        try NewJob.validateQueue(queue)
        return try await writer.write() { db, batch in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    UPDATE jobs SET state = 'pending', attempt = CASE WHEN ? IS NULL THEN 0 ELSE attempt END,
                                    max_attempts = COALESCE(attempt + ?, max_attempts), run_at = ?, finished_at = NULL, worker_id = NULL
                    WHERE queue = ? AND state = 'failed' AND (? IS NULL OR tenant = ?) AND depends_on IS NULL
                    RETURNING id, tenant, kind, attempt, has_children, batch_id
                    """,
                arguments: [attempts, attempts, Rows.micros(Date()), queue, tenant, tenant])
            for row in rows {
                let key = try Rows.key(row, queue: queue)
                batch.transition(key, from: .failed, to: .pending)
                let batchID = (row[5] as String?).flatMap(JobID.init)
                if row[4] || batchID != nil { try Self.reopened(key.id, hasChildren: row[4], batchID: batchID, db, batch) }
            }
            // Jobs with parents one by one, as a retry by hand: they wait for unfinished parents;
            // those whose parent failed stay failed (retrying the parent re-arms them).
            var redriven = rows.count
            let withParents = try String.fetchAll(db, sql: """
                SELECT id FROM jobs WHERE queue = ? AND state = 'failed' AND (? IS NULL OR tenant = ?) AND depends_on IS NOT NULL
                """, arguments: [queue, tenant, tenant]).compactMap(JobID.init)
            for id in withParents {
                let job = try Self.fetchJob(db, id, tenant: nil)
                let parents = try Self.parentStates(of: id, db)
                guard let (next, left) = try? DependencyRules.afterRetry(id, parents: parents, policy: job.onParentFailure) else { continue }
                let hasChildren = try Bool.fetchOne(db, sql: """
                    UPDATE jobs SET state = ?, attempt = CASE WHEN ? IS NULL THEN 0 ELSE attempt END,
                                    max_attempts = COALESCE(attempt + ?, max_attempts), run_at = ?, finished_at = NULL, worker_id = NULL, parents_left = ?
                    WHERE id = ? RETURNING has_children
                    """, arguments: [next.rawValue, attempts, attempts, Rows.micros(Date()), left, id.description]) ?? false
                var key = ChangeSet.JobKey(job)
                if attempts == nil { key.attempt = 0 }
                batch.transition(key, from: .failed, to: next)
                try Self.reopened(id, hasChildren: hasChildren, batchID: job.batchID, db, batch)
                redriven += 1
            }
            if redriven > 0 { batch.signal(.workAvailable(queue: queue)) }
            return redriven
        }
    }

    public func purge(queue: String, tenant: String?) async throws -> Int {
        try NewJob.validateQueue(queue)
        return try await writer.write() { db, batch in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    DELETE FROM jobs WHERE queue = ? AND state IN ('pending', 'scheduled') AND (? IS NULL OR tenant = ?)
                    RETURNING id, tenant, kind, attempt, state, has_children, batch_id
                    """,
                arguments: [queue, tenant, tenant])
            for row in rows {
                let key = try Rows.key(row, queue: queue)
                batch.transition(key, from: JobState(rawValue: row[4]), to: nil)
                // Purged counts as cancelled for its children and its batch.
                let batchID = (row[6] as String?).flatMap(JobID.init)
                if row[5] || batchID != nil {
                    try Self.finished(key, state: .cancelled, callbackURL: nil, hasChildren: row[5], batchID: batchID, db, batch)
                }
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
                        RETURNING queue, tenant, id, depends_on IS NOT NULL OR has_children
                        """),
                    arguments: [JobID.lowerBound(at: cutoff).description, state.rawValue, Rows.micros(cutoff), limit - deleted])
                for row in rows {
                    batch.move(queue: row[0], tenant: row[1], from: state, to: nil)
                    // A finished job's edges are spent (its children were released or cancelled).
                    if row[3] {
                        try db.cachedStatement(sql: "DELETE FROM job_dependencies WHERE parent_id = ?1 OR child_id = ?1")
                            .execute(arguments: [row[2] as String])
                    }
                }
                deleted += rows.count
            }
            if let cutoff = completedBefore {
                try db.execute(sql: """
                    DELETE FROM batches WHERE id IN (SELECT id FROM batches WHERE finished_at < ? LIMIT ?)
                    """, arguments: [Rows.micros(cutoff), limit])
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
}
