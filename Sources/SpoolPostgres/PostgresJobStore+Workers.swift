import Foundation
import Logging
import PostgresNIO
import SpoolCore

extension PostgresJobStore {
    // MARK: Workers

    public func lease(_ request: LeaseRequest) async throws -> LeaseBatch {
        try NewJob.validateQueue(request.queue)
        var request = request
        request.limit = max(1, min(request.limit, 1000))
        let limit = request.limit
        var (batch, promoted) = try await leaseAutocommit(request)
        // Jobs that just became due are leased by a second statement (one statement cannot see
        // the rows it changed).
        if promoted > 0 && batch.jobs.count < limit {
            request.limit = limit - batch.jobs.count
            let (more, _) = try await leaseAutocommit(request)
            batch.jobs = (batch.jobs + more.jobs).sorted { ($0.job.priority, $1.job.id) > ($1.job.priority, $0.job.id) }
            batch.nextRunAt = more.nextRunAt
        }
        batch.jobs = try await parentResults(batch.jobs)
        return batch
    }

    public func heartbeat(_ leases: [(JobID, LeaseToken)], leaseDuration: Duration) async throws -> Set<JobID> {
        if leases.isEmpty { return [] }
        let logger = self.logger
        let ids = leases.map(\.0.uuid), tokens = leases.map(\.1.value)
        let leaseMs = Int64(leaseDuration.seconds * 1000)
        let held = try await autocommit { client in
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
    func completeInTransaction(_ items: [(JobID, LeaseToken, String?)]) async throws -> Set<HeldLease> {
        let logger = self.logger
        let statement = CompleteStatement(items)
        // The completion UPDATE of the fast path, for any callback, returning what the webhook
        // and the events need.
        let query = PostgresQuery(unsafeSQL: """
            \(CompleteStatement.update)
            RETURNING spool_jobs.id, spool_jobs.tenant, spool_jobs.kind, spool_jobs.attempt, spool_jobs.queue,
                      spool_jobs.result, spool_jobs.callback_url, v.token, spool_jobs.has_children, spool_jobs.batch_id
            """, binds: statement.makeBindings())
        return try await transaction { connection, changes in
            var done = Set<HeldLease>()
            var follow: [(ChangeSet.JobKey, String?, Bool, JobID?)] = []
            for (key, row) in try await connection.keys(query, logger: logger) {
                let cells = row.makeRandomAccess()
                let (result, callback, token) = try cells.decodeTail((String?, String?, String).self, from: 5)
                let (children, batch) = try cells.decodeTail((Bool, UUID?).self, from: 8)
                done.insert(HeldLease(key.id, LeaseToken(token)))
                changes.transition(key, from: .processing, to: .completed, result: result.map { Data($0.utf8) })
                follow.append((key, callback, children, batch.map(JobID.init(uuid:))))
            }
            // In batch order, then job order: two transactions lock batch rows in the same order.
            follow.sort { ($0.3?.description ?? "", $0.0.id) < ($1.3?.description ?? "", $1.0.id) }
            for (key, callback, children, batch) in follow {
                try await self.finished(key, state: .completed, callbackURL: callback, hasChildren: children, batchID: batch, connection, changes)
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
                RETURNING id, tenant, kind, attempt, queue, callback_url, has_children, batch_id
                """, logger: logger).first else { throw SpoolError.leaseLost(id) }
            changes.transition(key, from: .processing, to: state, error: error)
            if state != .failed { changes.signal(.workAvailable(queue: key.queue)) }
            if state == .failed {
                let (callback, children, batch) = try row.makeRandomAccess().decodeTail((String?, Bool, UUID?).self, from: 5)
                try await self.finished(key, state: .failed, callbackURL: callback, hasChildren: children,
                                        batchID: batch.map(JobID.init(uuid:)), connection, changes)
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
                        'reason', \(LeaseRescue.reason)::text,
                        'worker', worker_id)),
                    lease_token = NULL, lease_expires_at = NULL
                FROM expired WHERE spool_jobs.id = expired.id
                RETURNING spool_jobs.id, tenant, kind, attempt, queue, state, worker_id, callback_url, has_children, batch_id
                """, logger: logger)
            for (key, row) in rows {
                let cells = row.makeRandomAccess()
                let (stateText, worker, callback) = try cells.decodeTail((String, String?, String?).self, from: 5)
                let (children, batch) = try cells.decodeTail((Bool, UUID?).self, from: 8)
                let state: JobState = stateText == "pending" ? .pending : .failed
                let error = LeaseRescue.error(attempt: key.attempt, worker: worker, at: Date())
                changes.transition(key, from: .processing, to: state, error: error)
                if state == .pending { changes.signal(.workAvailable(queue: key.queue)) }
                if state == .failed {
                    try await self.finished(key, state: .failed, callbackURL: callback, hasChildren: children,
                                            batchID: batch.map(JobID.init(uuid:)), connection, changes)
                }
            }
            return rows.count
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
