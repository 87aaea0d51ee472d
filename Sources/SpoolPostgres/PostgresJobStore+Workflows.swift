import Foundation
import Logging
import PostgresNIO
import SpoolCore

// Job dependencies and batches, in the transaction of the write that causes them
// (``DependencyRules`` and ``BatchRules`` decide; this file reads and writes rows). Counters
// (a child's parents_left, a batch's done) change in one statement each, under the row's lock,
// so two transactions finishing two parents or two jobs of a batch at once count both, and
// only the one that reaches the end releases the child or finishes the batch.
extension PostgresJobStore {
    // MARK: Enqueue

    /// Marks the existing parents of new jobs (locked in id order) and reads their tenant and state.
    func markParents(_ ids: [JobID], _ connection: PostgresConnection) async throws -> [JobID: EnqueuePlan.Parent] {
        if ids.isEmpty { return [:] }
        var parents: [JobID: EnqueuePlan.Parent] = [:]
        let uuids = ids.map(\.uuid)
        for try await (id, tenant, state) in try await connection.query("""
            WITH p AS (SELECT id FROM spool_jobs WHERE id = ANY(\(uuids)::uuid[]) ORDER BY id FOR UPDATE)
            UPDATE spool_jobs SET has_children = true FROM p WHERE spool_jobs.id = p.id
            RETURNING spool_jobs.id, spool_jobs.tenant, spool_jobs.state
            """, logger: logger).decode((UUID, String, String).self) {
            if let state = JobState(rawValue: state) { parents[JobID(uuid: id)] = EnqueuePlan.Parent(tenant: tenant, state: state) }
        }
        return parents
    }

    /// Writes what plain inserts leave out: parents, edges, batch membership; counts the new
    /// jobs in their batches, and finishes jobs created cancelled (a parent had failed).
    func writeWorkflows(_ resolution: EnqueuePlan.Resolution, _ connection: PostgresConnection, _ changes: ChangeSet) async throws {
        let parentsOfNew = Set(resolution.edges.map(\.parent))
        let touched = resolution.new.filter { !$0.dependsOn.isEmpty || $0.batchID != nil || parentsOfNew.contains($0.id) }
        if !touched.isEmpty {
            let ids = touched.map(\.id.uuid)
            let parents = touched.map { $0.dependsOn.isEmpty ? "" : PGRows.jsonText($0.dependsOn.map(\.description)) }
            let policies = touched.map { $0.onParentFailure == .run ? "run" : "" }, left = touched.map { Int64($0.parentsLeft) }
            let batches = touched.map { $0.batchID?.description ?? "" }, children = touched.map { parentsOfNew.contains($0.id) }
            let reasons = touched.map { $0.cancelReason ?? "" }, causes = touched.map { resolution.cancelledBy[$0.id]?.description ?? "" }
            let finished = touched.map { $0.finishedAt ?? Date(timeIntervalSince1970: 0) }
            try await connection.query("""
                UPDATE spool_jobs SET depends_on = NULLIF(v.parents, ''), on_parent_failure = NULLIF(v.policy, ''), parents_left = v.waiting_for,
                       batch_id = NULLIF(v.batch, '')::uuid, has_children = v.children, cancel_reason = NULLIF(v.reason, ''),
                       cancelled_by = NULLIF(v.cause, '')::uuid,
                       finished_at = CASE WHEN v.finished > 'epoch'::timestamptz THEN v.finished END
                FROM unnest(\(ids)::uuid[], \(parents)::text[], \(policies)::text[], \(left)::int8[], \(batches)::text[],
                            \(children)::bool[], \(reasons)::text[], \(causes)::text[], \(finished)::timestamptz[])
                     AS v(id, parents, policy, waiting_for, batch, children, reason, cause, finished)
                WHERE spool_jobs.id = v.id
                """, logger: logger)
        }
        if !resolution.edges.isEmpty {
            let parents = resolution.edges.map(\.parent.uuid), children = resolution.edges.map(\.child.uuid)
            try await connection.query("""
                INSERT INTO spool_job_dependencies (parent_id, child_id)
                SELECT * FROM unnest(\(parents)::uuid[], \(children)::uuid[]) ON CONFLICT DO NOTHING
                """, logger: logger)
        }
        var joining: [JobID: (total: Int, tenant: String)] = [:]
        for job in resolution.new { if let id = job.batchID { joining[id, default: (0, job.tenant)].total += 1 } }
        for (id, join) in joining.sorted(by: { $0.key < $1.key }) {
            var joined = false
            for try await _ in try await connection.query("""
                UPDATE spool_batches SET total = total + \(Int64(join.total)) WHERE id = \(id.uuid) AND tenant = \(join.tenant) AND state = 'open'
                RETURNING id
                """, logger: logger) { joined = true }
            if !joined { throw try await batchRefusal(id, tenant: join.tenant, connection) }
        }
        // Jobs created cancelled (a parent had failed): their webhook and batch count. Their
        // children can only be later jobs of this call, which counted them already.
        for job in resolution.new where job.state.isFinished {
            try await finished(.init(job), state: job.state, callbackURL: job.callbackURL, hasChildren: false, batchID: job.batchID, connection, changes)
        }
    }

    func batchRefusal(_ id: JobID, tenant: String, _ connection: PostgresConnection) async throws -> SpoolError {
        for try await (owner, state) in try await connection.query(
            "SELECT tenant, state FROM spool_batches WHERE id = \(id.uuid)", logger: logger
        ).decode((String, String).self) where owner == tenant {
            return .conflict(reason: "batch \(id) is \(state): jobs may join only an open batch")
        }
        return .invalid(field: "batch_id", reason: "no batch \(id)")
    }

    // MARK: A job finished

    /// What follows a job's reaching terminal `state`, in the same transaction: its webhook,
    /// its waiting children (released, or cancelled and so on down), its batch's count.
    func finished(_ key: ChangeSet.JobKey, state: JobState, callbackURL: String?, hasChildren: Bool, batchID: JobID?,
                  _ connection: PostgresConnection, _ changes: ChangeSet) async throws {
        if callbackURL != nil { try await scheduleWebhook(connection, changes, key.id) }
        if !hasChildren && batchID == nil { return }  // a plain job: nothing more
        var work = [(key: key, state: state, hasChildren: hasChildren, batchID: batchID)]
        while let item = work.popLast() {
            if let batchID = item.batchID { try await countFinished(in: batchID, connection, changes) }
            guard item.hasChildren else { continue }
            var children: [(JobID, ParentFailurePolicy)] = []
            for try await (id, policy) in try await connection.query("""
                SELECT j.id, j.on_parent_failure FROM spool_job_dependencies d JOIN spool_jobs j ON j.id = d.child_id
                WHERE d.parent_id = \(item.key.id.uuid) AND j.state = 'waiting' ORDER BY j.id
                """, logger: logger).decode((UUID, String?).self) {
                children.append((JobID(uuid: id), policy.flatMap(ParentFailurePolicy.init(rawValue:)) ?? .cancel))
            }
            for (child, policy) in children {
                switch DependencyRules.outcome(of: item.state, policy: policy) {
                case .unfinished:
                    continue
                case .done:
                    // One statement under the row lock: two parents finishing at once both count.
                    for (key, row) in try await connection.keys("""
                        UPDATE spool_jobs SET parents_left = greatest(0, parents_left - 1),
                               state = CASE WHEN parents_left > 1 THEN 'waiting' WHEN run_at > now() THEN 'scheduled' ELSE 'pending' END
                        WHERE id = \(child.uuid) AND state = 'waiting'
                        RETURNING id, tenant, kind, attempt, queue, state
                        """, logger: logger) {
                        let next = JobState(rawValue: try row.makeRandomAccess()[5].decode(String.self)) ?? .waiting
                        if next != .waiting {
                            changes.transition(key, from: .waiting, to: next)
                            changes.signal(.workAvailable(queue: key.queue))
                        }
                    }
                case .blocking:
                    let reason = DependencyRules.cancelReason(parent: item.key.id, state: item.state)
                    for (key, row) in try await connection.keys("""
                        UPDATE spool_jobs SET state = 'cancelled', cancel_reason = \(reason), cancelled_by = \(item.key.id.uuid), finished_at = now()
                        WHERE id = \(child.uuid) AND state = 'waiting'
                        RETURNING id, tenant, kind, attempt, queue, callback_url, has_children, batch_id
                        """, logger: logger) {
                        let (url, more, batch) = try row.makeRandomAccess().decodeTail((String?, Bool, UUID?).self, from: 5)
                        changes.transition(key, from: .waiting, to: .cancelled)
                        if url != nil { try await scheduleWebhook(connection, changes, key.id) }
                        work.append((key, .cancelled, more, batch.map(JobID.init(uuid:))))
                    }
                }
            }
        }
    }

    /// What follows a job's leaving a terminal state by hand (retry): it counts as unfinished in
    /// its batch again, and the children it had cancelled wait again (and theirs, down the DAG).
    func reopened(_ id: JobID, hasChildren: Bool, batchID: JobID?, _ connection: PostgresConnection, _ changes: ChangeSet) async throws {
        var work = [(id: id, hasChildren: hasChildren, batchID: batchID)]
        while let item = work.popLast() {
            if let batchID = item.batchID {
                try await connection.query("UPDATE spool_batches SET done = greatest(0, done - 1) WHERE id = \(batchID.uuid)", logger: logger)
            }
            guard item.hasChildren else { continue }
            // Waiting children counted it as done (it had failed or was cancelled and they run
            // anyway): it is unfinished again.
            // (Only run-anyway children can have: the others were cancelled, and those re-armed
            // below count it from its state.)
            try await connection.query("""
                UPDATE spool_jobs SET parents_left = parents_left + 1
                WHERE state = 'waiting' AND on_parent_failure = 'run'
                  AND id IN (SELECT child_id FROM spool_job_dependencies WHERE parent_id = \(item.id.uuid))
                """, logger: logger)
            var children: [(JobID, ParentFailurePolicy)] = []
            for try await (child, policy) in try await connection.query("""
                SELECT j.id, j.on_parent_failure FROM spool_job_dependencies d JOIN spool_jobs j ON j.id = d.child_id
                WHERE d.parent_id = \(item.id.uuid) AND j.state = 'cancelled' AND j.cancelled_by = \(item.id.uuid)
                ORDER BY j.id FOR UPDATE OF j
                """, logger: logger).decode((UUID, String?).self) {
                children.append((JobID(uuid: child), policy.flatMap(ParentFailurePolicy.init(rawValue:)) ?? .cancel))
            }
            for (child, policy) in children {
                let parents = try await parentStates(of: child, connection)
                switch DependencyRules.standing(parents: parents, policy: policy) {
                case .waiting(let left):
                    for (key, row) in try await connection.keys("""
                        UPDATE spool_jobs SET state = 'waiting', parents_left = \(Int64(left)), cancel_reason = NULL, cancelled_by = NULL, finished_at = NULL
                        WHERE id = \(child.uuid) AND state = 'cancelled'
                        RETURNING id, tenant, kind, attempt, queue, has_children, batch_id
                        """, logger: logger) {
                        let (more, batch) = try row.makeRandomAccess().decodeTail((Bool, UUID?).self, from: 5)
                        changes.transition(key, from: .cancelled, to: .waiting)
                        work.append((key.id, more, batch.map(JobID.init(uuid:))))
                    }
                case .ready:
                    continue  // cannot happen: the parent retried is unfinished
                case .cancelled(let other, let reason):
                    try await connection.query(
                        "UPDATE spool_jobs SET cancelled_by = \(other.uuid), cancel_reason = \(reason) WHERE id = \(child.uuid)", logger: logger)
                }
            }
        }
    }

    /// The states of a job's parents (those still in the table), locked against change until
    /// the transaction ends: a parent finishing at the same moment waits, then finds the child
    /// as this transaction left it.
    func parentStates(of child: JobID, _ connection: PostgresConnection) async throws -> [(JobID, JobState)] {
        var parents: [(JobID, JobState)] = []
        for try await (parent, state) in try await connection.query("""
            SELECT j.id, j.state FROM spool_job_dependencies d JOIN spool_jobs j ON j.id = d.parent_id
            WHERE d.child_id = \(child.uuid) ORDER BY j.id FOR SHARE OF j
            """, logger: logger).decode((UUID, String).self) {
            if let state = JobState(rawValue: state) { parents.append((JobID(uuid: parent), state)) }
        }
        return parents
    }

    // MARK: Batches

    static let batchColumns = """
        id, tenant, state, total, done, callback, on_failure, callback_url, callback_job_id, created_at, closed_at, finished_at
        """

    static func batchRow(_ row: PostgresRow) throws -> Batch {
        let (id, tenant, stateText, total, done, callback, onFailure, url, callbackJob, createdAt, closedAt, finishedAt) = try row.decode(
            (UUID, String, String, Int, Int, String?, String?, String?, UUID?, Date, Date?, Date?).self)
        guard let state = Batch.State(rawValue: stateText) else { throw PGRows.CorruptRow(description: "bad state of batch \(id)") }
        func decode(_ text: String?) throws -> BatchCallback? { try text.map { try JSON.decode(BatchCallback.self, from: Data($0.utf8)) } }
        return Batch(id: JobID(uuid: id), tenant: tenant, state: state, total: total, done: done, callback: try decode(callback),
                     onFailure: try decode(onFailure), callbackURL: url, callbackJobID: callbackJob.map(JobID.init(uuid:)),
                     createdAt: createdAt, closedAt: closedAt, finishedAt: finishedAt)
    }

    func fetchBatch(_ id: JobID, tenant: String?, lock: Bool = false, _ connection: PostgresConnection) async throws -> Batch {
        var found: Batch?
        for try await row in try await connection.query(
            "SELECT \(unescaped: Self.batchColumns) FROM spool_batches WHERE id = \(id.uuid) \(unescaped: lock ? "FOR UPDATE" : "")", logger: logger
        ) { found = try Self.batchRow(row) }
        guard var batch = found, tenant == nil || batch.tenant == tenant else { throw SpoolError.batchNotFound(id) }
        for try await (state, n) in try await connection.query(
            "SELECT state, count(*) FROM spool_jobs WHERE batch_id = \(id.uuid) GROUP BY state", logger: logger
        ).decode((String, Int64).self) {
            if let state = JobState(rawValue: state) { batch.counts[state] = Int(n) }
        }
        return batch
    }

    /// One more job of the batch finished: the batch finishes if it was the last.
    func countFinished(in id: JobID, _ connection: PostgresConnection, _ changes: ChangeSet) async throws {
        for try await (state, done, total) in try await connection.query(
            "UPDATE spool_batches SET done = done + 1 WHERE id = \(id.uuid) RETURNING state, done, total", logger: logger
        ).decode((String, Int, Int).self) {
            if let state = Batch.State(rawValue: state), BatchRules.isFinished(state: state, done: done, total: total) {
                try await finishBatch(id, connection, changes)
            }
        }
    }

    /// Marks the batch finished (once: the row is updated only while unfinished) and makes its
    /// callback job and webhook.
    func finishBatch(_ id: JobID, _ connection: PostgresConnection, _ changes: ChangeSet) async throws {
        var finishedState: String?
        for try await state in try await connection.query("""
            UPDATE spool_batches SET state = CASE state WHEN 'closed' THEN 'finished' ELSE state END, finished_at = now()
            WHERE id = \(id.uuid) AND finished_at IS NULL AND state IN ('closed', 'cancelled') RETURNING state
            """, logger: logger).decode(String.self) { finishedState = state }
        guard let finishedState else { return }
        var batch = try await fetchBatch(id, tenant: nil, connection)
        let now = Date()
        if finishedState == Batch.State.finished.rawValue {
            var failed: [JobID] = []
            for try await job in try await connection.query("""
                SELECT id FROM spool_jobs WHERE batch_id = \(id.uuid) AND state = 'failed' ORDER BY seq LIMIT \(Int64(BatchRules.maxFailedIDs))
                """, logger: logger).decode(UUID.self) { failed.append(JobID(uuid: job)) }
            if let request = BatchRules.callbackJob(for: batch, counts: batch.counts, failed: failed) {
                let job = Job(new: request, defaults: nil, now: now)
                try await insert([job], connection, changes)
                try await connection.query("UPDATE spool_batches SET callback_job_id = \(job.id.uuid) WHERE id = \(id.uuid)", logger: logger)
                batch.callbackJobID = job.id
            }
        }
        if let url = batch.callbackURL {
            let delivery = Job(new: Webhook.deliveryJob(for: batch, url: url), defaults: nil, now: now)
            try await insert([delivery], connection, changes)
            let event = "batch." + (batch.state == .cancelled ? "cancelled" : "finished")
            try await connection.query("""
                INSERT INTO spool_webhook_deliveries (id, job_id, tenant, url, event, created_at)
                VALUES (\(delivery.id.uuid), \(id.uuid), \(batch.tenant), \(url), \(event), now())
                """, logger: logger)
        }
    }

    public func createBatch(_ new: NewBatch, jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> (Batch, [EnqueueResult]) {
        try new.validate()
        for job in jobs { try job.validateNames() }
        let callback = try new.callback.map { String(decoding: try JSON.encode($0), as: UTF8.self) }
        let onFailure = try new.onFailure.map { String(decoding: try JSON.encode($0), as: UTF8.self) }
        let logger = self.logger
        return try await settlingKeyRaces {
            try await self.transaction { connection, changes in
                let now = Date()
                let id = JobID.make(now: now)
                try await connection.query("""
                    INSERT INTO spool_batches (id, tenant, state, callback, on_failure, callback_url, created_at)
                    VALUES (\(id.uuid), \(new.tenant), 'open', \(callback), \(onFailure), \(new.callbackURL), \(now))
                    """, logger: logger)
                var members = jobs
                for i in members.indices { members[i].batchID = id }
                let results = members.isEmpty ? [] : try await self.enqueue(members, defaults: defaults, depthLimits: depthLimits, connection, changes)
                if !new.open { try await self.close(id, connection, changes) }
                return (try await self.fetchBatch(id, tenant: nil, connection), results)
            }
        }
    }

    func close(_ id: JobID, _ connection: PostgresConnection, _ changes: ChangeSet) async throws {
        for try await (done, total) in try await connection.query("""
            UPDATE spool_batches SET state = 'closed', closed_at = now() WHERE id = \(id.uuid) AND state = 'open' RETURNING done, total
            """, logger: logger).decode((Int, Int).self) {
            if BatchRules.isFinished(state: .closed, done: done, total: total) { try await finishBatch(id, connection, changes) }
        }
    }

    public func batch(_ id: JobID, tenant: String?) async throws -> Batch? {
        try await transaction { connection, _ in
            do { return try await self.fetchBatch(id, tenant: tenant, connection) } catch SpoolError.batchNotFound { return nil }
        }
    }

    public func closeBatch(_ id: JobID, tenant: String?) async throws -> Batch {
        try await transaction { connection, changes in
            let current = try await self.fetchBatch(id, tenant: tenant, lock: true, connection)
            guard current.state == .open else { throw SpoolError.conflict(reason: "batch \(id) is \(current.state.rawValue), not open") }
            try await self.close(id, connection, changes)
            return try await self.fetchBatch(id, tenant: tenant, connection)
        }
    }

    public func cancelBatch(_ id: JobID, tenant: String?) async throws -> Batch {
        let logger = self.logger
        return try await transaction { connection, changes in
            let current = try await self.fetchBatch(id, tenant: tenant, connection)
            guard current.state == .open || current.state == .closed else {
                throw SpoolError.conflict(reason: "batch \(id) is \(current.state.rawValue)")
            }
            // Members are locked before the batch row, as completions lock them (job, then batch).
            var members: [(ChangeSet.JobKey, JobState, String?, Bool)] = []
            for (key, row) in try await connection.keys("""
                SELECT id, tenant, kind, attempt, queue, state, callback_url, has_children FROM spool_jobs
                WHERE batch_id = \(id.uuid) AND state IN ('waiting', 'scheduled', 'pending', 'processing') ORDER BY id FOR UPDATE
                """, logger: logger) {
                let (state, url, children) = try row.makeRandomAccess().decodeTail((String, String?, Bool).self, from: 5)
                if let state = JobState(rawValue: state) { members.append((key, state, url, children)) }
            }
            var cancelling = false
            for try await _ in try await connection.query("""
                UPDATE spool_batches SET state = 'cancelled', closed_at = coalesce(closed_at, now())
                WHERE id = \(id.uuid) AND state IN ('open', 'closed') RETURNING id
                """, logger: logger) { cancelling = true }
            guard cancelling else { throw SpoolError.conflict(reason: "batch \(id) finished or was cancelled meanwhile") }
            // A job that joined while the members were being locked (its enqueue committed before
            // the batch row was free): found now, cancelled with the others.
            let locked = members.map(\.0.id.uuid)
            for (key, row) in try await connection.keys("""
                SELECT id, tenant, kind, attempt, queue, state, callback_url, has_children FROM spool_jobs
                WHERE batch_id = \(id.uuid) AND state IN ('waiting', 'scheduled', 'pending', 'processing')
                  AND NOT (id = ANY(\(locked)::uuid[])) ORDER BY id FOR UPDATE
                """, logger: logger) {
                let (state, url, children) = try row.makeRandomAccess().decodeTail((String, String?, Bool).self, from: 5)
                if let state = JobState(rawValue: state) { members.append((key, state, url, children)) }
            }
            // Every unfinished member is cancelled first, then what follows each runs (a parent's
            // hook must not release a member that the cancel is about to reach).
            let ids = members.map(\.0.id.uuid)
            try await connection.query("""
                UPDATE spool_jobs SET state = 'cancelled', cancel_reason = \(BatchRules.cancelReason(id)), finished_at = now(),
                       lease_token = NULL, lease_expires_at = NULL
                WHERE id = ANY(\(ids)::uuid[])
                """, logger: logger)
            for (key, from, _, _) in members {
                changes.transition(key, from: from, to: .cancelled)
                if from == .processing { changes.signal(.jobCancelled(key.id)) }
            }
            for (key, _, url, children) in members {
                try await self.finished(key, state: .cancelled, callbackURL: url, hasChildren: children, batchID: id, connection, changes)
            }
            // A batch whose jobs had all finished already finishes now.
            for try await (done, total) in try await connection.query(
                "SELECT done, total FROM spool_batches WHERE id = \(id.uuid)", logger: logger
            ).decode((Int, Int).self) where BatchRules.isFinished(state: .cancelled, done: done, total: total) {
                try await self.finishBatch(id, connection, changes)
            }
            return try await self.fetchBatch(id, tenant: tenant, connection)
        }
    }

    // MARK: Leases

    /// The parents of leased jobs that have any, with their results.
    func parentResults(_ jobs: [LeasedJob]) async throws -> [LeasedJob] {
        let wanted = Array(Set(jobs.flatMap(\.job.dependsOn)))
        if wanted.isEmpty { return jobs }
        let uuids = wanted.map(\.uuid)
        let logger = self.logger
        // Read after the lease committed: a failed read must not lose the leased jobs until their
        // leases expire, so it is tried again, and the jobs are given back if it keeps failing.
        var attempt = 0
        while true {
            attempt += 1
            do { return try await readParents(jobs, uuids, logger) } catch {
                if attempt < 3 { try? await Task.sleep(for: .milliseconds(50 * attempt)); continue }
                for job in jobs { try? await release(job.id, lease: job.lease) }
                throw error
            }
        }
    }

    private func readParents(_ jobs: [LeasedJob], _ uuids: [UUID], _ logger: Logger) async throws -> [LeasedJob] {
        let found = try await autocommit { client in
            var found: [JobID: ParentResult] = [:]
            for try await (id, kind, state, result) in try await client.query(
                "SELECT id, kind, state, result FROM spool_jobs WHERE id = ANY(\(uuids)::uuid[])", logger: logger
            ).decode((UUID, String, String, String?).self) {
                guard let state = JobState(rawValue: state) else { continue }
                found[JobID(uuid: id)] = ParentResult(id: JobID(uuid: id), kind: kind, state: state, result: result.map { Data($0.utf8) })
            }
            return found
        }
        return jobs.map { leased in
            var leased = leased
            leased.parents = leased.job.dependsOn.compactMap { found[$0] }
            return leased
        }
    }
}
