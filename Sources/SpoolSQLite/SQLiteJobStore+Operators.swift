import Foundation
import GRDB
import SpoolCore
import Synchronization

extension SQLiteJobStore {
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
}
