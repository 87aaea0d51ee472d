import Foundation
import GRDB
import SpoolCore

// Job dependencies and batches, in the transaction of the write that causes them
// (``DependencyRules`` and ``BatchRules`` decide; this file reads and writes rows).
extension SQLiteJobStore {
    // MARK: Enqueue

    /// Marks the existing parents of new jobs (so that they look for children when they
    /// finish) and reads their tenant and state.
    static func markParents(_ ids: [JobID], _ db: Database) throws -> [JobID: EnqueuePlan.Parent] {
        var parents: [JobID: EnqueuePlan.Parent] = [:]
        let statement = try db.cachedStatement(sql: "UPDATE jobs SET has_children = 1 WHERE id = ? RETURNING tenant, state")
        for id in ids {
            if let row = try Row.fetchOne(statement, arguments: [id.description]), let state = JobState(rawValue: row[1]) {
                parents[id] = EnqueuePlan.Parent(tenant: row[0], state: state)
            }
        }
        return parents
    }

    /// Writes what plain inserts leave out: parents, edges, batch membership; counts the new
    /// jobs in their batches, and finishes jobs created cancelled (a parent had failed).
    static func writeWorkflows(_ resolution: EnqueuePlan.Resolution, _ db: Database, _ batch: GroupCommitWriter.Batch) throws {
        let parentsOfNew = Set(resolution.edges.map(\.parent))
        let update = try db.cachedStatement(sql: """
            UPDATE jobs SET depends_on = ?, on_parent_failure = ?, parents_left = ?, batch_id = ?, has_children = ?,
                            cancel_reason = ?, cancelled_by = ?, finished_at = ?
            WHERE id = ?
            """)
        for job in resolution.new where !job.dependsOn.isEmpty || job.batchID != nil || parentsOfNew.contains(job.id) {
            try update.execute(arguments: [
                job.dependsOn.isEmpty ? nil : Rows.jsonText(job.dependsOn.map(\.description)), job.onParentFailure == .run ? "run" : nil,
                job.parentsLeft, job.batchID?.description, parentsOfNew.contains(job.id), job.cancelReason,
                resolution.cancelledBy[job.id]?.description, job.finishedAt.map(Rows.micros), job.id.description,
            ])
        }
        for start in stride(from: 0, to: resolution.edges.count, by: 400) {
            let slice = resolution.edges[start..<min(start + 400, resolution.edges.count)]
            var arguments = StatementArguments()
            for edge in slice { arguments += [edge.parent.description, edge.child.description] }
            try db.cachedStatement(sql: "INSERT OR IGNORE INTO job_dependencies (parent_id, child_id) VALUES \(placeholders(rows: slice.count, columns: 2))")
                .execute(arguments: arguments)
        }
        var joining: [JobID: (total: Int, tenant: String)] = [:]
        for job in resolution.new { if let id = job.batchID { joining[id, default: (0, job.tenant)].total += 1 } }
        for (id, join) in joining.sorted(by: { $0.key < $1.key }) {
            try db.cachedStatement(sql: "UPDATE batches SET total = total + ? WHERE id = ? AND tenant = ? AND state = 'open'")
                .execute(arguments: [join.total, id.description, join.tenant])
            if db.changesCount == 0 { throw try batchRefusal(id, tenant: join.tenant, db) }
        }
        // Jobs created cancelled (a parent had failed): their webhook and batch count. Their
        // children can only be later jobs of this call, which counted them already.
        for job in resolution.new where job.state.isFinished {
            try finished(.init(job), state: job.state, callbackURL: job.callbackURL, hasChildren: false, batchID: job.batchID, db, batch)
        }
    }

    /// Why a job cannot join the batch `id`.
    static func batchRefusal(_ id: JobID, tenant: String, _ db: Database) throws -> SpoolError {
        guard let row = try Row.fetchOne(db, sql: "SELECT tenant, state FROM batches WHERE id = ?", arguments: [id.description]),
              (row[0] as String) == tenant else { return .invalid(field: "batch_id", reason: "no batch \(id)") }
        return .conflict(reason: "batch \(id) is \(row[1] as String): jobs may join only an open batch")
    }

    // MARK: A job finished

    /// What follows a job's reaching terminal `state`, in the same transaction: its webhook,
    /// its waiting children (released, or cancelled and so on down), its batch's count.
    static func finished(_ key: ChangeSet.JobKey, state: JobState, callbackURL: String?, hasChildren: Bool, batchID: JobID?,
                         _ db: Database, _ batch: GroupCommitWriter.Batch) throws {
        try scheduleWebhook(db, batch, key, url: callbackURL, state: state)
        if !hasChildren && batchID == nil { return }  // a plain job: nothing more (the common case)
        var work = [(key: key, state: state, hasChildren: hasChildren, batchID: batchID)]
        let now = Date()
        while let item = work.popLast() {
            if let batchID = item.batchID { try countFinished(in: batchID, db, batch) }
            guard item.hasChildren else { continue }
            let children = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT j.id, j.tenant, j.kind, j.attempt, j.queue, j.on_parent_failure, j.parents_left, j.run_at,
                           j.callback_url, j.has_children, j.batch_id
                    FROM job_dependencies d JOIN jobs j ON j.id = d.child_id
                    WHERE d.parent_id = ? AND j.state = 'waiting'
                    """),
                arguments: [item.key.id.description])
            for row in children {
                let child = try Rows.key(row, queue: row[4])
                let policy = (row[5] as String?).flatMap(ParentFailurePolicy.init(rawValue:)) ?? .cancel
                switch DependencyRules.outcome(of: item.state, policy: policy) {
                case .unfinished:
                    continue
                case .done:
                    let left = max(0, (row[6] as Int) - 1)
                    let next: JobState = left > 0 ? .waiting : DependencyRules.readyState(runAt: Rows.date(row[7]), now: now)
                    try db.cachedStatement(sql: "UPDATE jobs SET parents_left = ?, state = ? WHERE id = ?")
                        .execute(arguments: [left, next.rawValue, child.id.description])
                    if next != .waiting {
                        batch.transition(child, from: .waiting, to: next)
                        batch.signal(.workAvailable(queue: child.queue))
                    }
                case .blocking:
                    let reason = DependencyRules.cancelReason(parent: item.key.id, state: item.state)
                    try db.cachedStatement(sql: """
                        UPDATE jobs SET state = 'cancelled', cancel_reason = ?, cancelled_by = ?, finished_at = ? WHERE id = ?
                        """).execute(arguments: [reason, item.key.id.description, Rows.micros(now), child.id.description])
                    batch.transition(child, from: .waiting, to: .cancelled)
                    try scheduleWebhook(db, batch, child, url: row[8], state: .cancelled)
                    work.append((child, .cancelled, row[9], (row[10] as String?).flatMap(JobID.init)))
                }
            }
        }
    }

    /// What follows a job's leaving a terminal state by hand (retry): it counts as unfinished in
    /// its batch again, and the children it had cancelled wait again (and theirs, down the DAG).
    static func reopened(_ id: JobID, hasChildren: Bool, batchID: JobID?, _ db: Database, _ batch: GroupCommitWriter.Batch) throws {
        var work = [(id: id, hasChildren: hasChildren, batchID: batchID)]
        while let item = work.popLast() {
            if let batchID = item.batchID {
                try db.cachedStatement(sql: "UPDATE batches SET done = max(0, done - 1) WHERE id = ?").execute(arguments: [batchID.description])
            }
            guard item.hasChildren else { continue }
            // Waiting children counted it as done (it had failed or was cancelled and they run
            // anyway): it is unfinished again.
            // (Only run-anyway children can have: the others were cancelled, and those re-armed
            // below count it from its state.)
            try db.cachedStatement(sql: """
                UPDATE jobs SET parents_left = parents_left + 1
                WHERE state = 'waiting' AND on_parent_failure = 'run'
                  AND id IN (SELECT child_id FROM job_dependencies WHERE parent_id = ?)
                """).execute(arguments: [item.id.description])
            let children = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT j.id, j.tenant, j.kind, j.attempt, j.queue, j.on_parent_failure, j.has_children, j.batch_id
                    FROM job_dependencies d JOIN jobs j ON j.id = d.child_id
                    WHERE d.parent_id = ?1 AND j.state = 'cancelled' AND j.cancelled_by = ?1
                    """),
                arguments: [item.id.description])
            for row in children {
                let child = try Rows.key(row, queue: row[4])
                let parents = try parentStates(of: child.id, db)
                switch DependencyRules.standing(parents: parents, policy: (row[5] as String?).flatMap(ParentFailurePolicy.init(rawValue:)) ?? .cancel) {
                case .waiting(let left):
                    try db.cachedStatement(sql: """
                        UPDATE jobs SET state = 'waiting', parents_left = ?, cancel_reason = NULL, cancelled_by = NULL, finished_at = NULL
                        WHERE id = ?
                        """).execute(arguments: [left, child.id.description])
                    batch.transition(child, from: .cancelled, to: .waiting)
                    work.append((child.id, row[6], (row[7] as String?).flatMap(JobID.init)))
                case .ready:
                    // Cannot happen (the parent retried is unfinished); left cancelled if it does.
                    continue
                case .cancelled(let other, let reason):
                    try db.cachedStatement(sql: "UPDATE jobs SET cancelled_by = ?, cancel_reason = ? WHERE id = ?")
                        .execute(arguments: [other.description, reason, child.id.description])
                }
            }
        }
    }

    /// The states of a job's parents (those still in the table).
    static func parentStates(of child: JobID, _ db: Database) throws -> [(JobID, JobState)] {
        try Row.fetchAll(
            db.cachedStatement(sql: "SELECT j.id, j.state FROM job_dependencies d JOIN jobs j ON j.id = d.parent_id WHERE d.child_id = ?"),
            arguments: [child.description]
        ).compactMap { row -> (JobID, JobState)? in
            guard let id = JobID(row[0] as String), let state = JobState(rawValue: row[1]) else { return nil }
            return (id, state)
        }
    }

    // MARK: Batches

    static let batchColumns = "id, tenant, state, total, done, callback, on_failure, callback_url, callback_job_id, created_at, closed_at, finished_at"

    static func batchRow(_ row: Row) throws -> Batch {
        guard let id = JobID(row[0] as String), let state = Batch.State(rawValue: row[2]) else {
            throw Rows.CorruptRow(description: "bad batch row")
        }
        func callback(_ text: String?) throws -> BatchCallback? {
            try text.map { try JSON.decode(BatchCallback.self, from: Data($0.utf8)) }
        }
        return Batch(id: id, tenant: row[1], state: state, total: row[3], done: row[4], callback: try callback(row[5]),
                     onFailure: try callback(row[6]), callbackURL: row[7], callbackJobID: (row[8] as String?).flatMap(JobID.init),
                     createdAt: Rows.date(row[9]), closedAt: (row[10] as Int64?).map(Rows.date), finishedAt: (row[11] as Int64?).map(Rows.date))
    }

    static func fetchBatch(_ id: JobID, tenant: String?, _ db: Database) throws -> Batch {
        guard let row = try Row.fetchOne(db, sql: "SELECT \(batchColumns) FROM batches WHERE id = ?", arguments: [id.description]) else {
            throw SpoolError.batchNotFound(id)
        }
        var batch = try batchRow(row)
        if let tenant, batch.tenant != tenant { throw SpoolError.batchNotFound(id) }
        for row in try Row.fetchAll(db, sql: "SELECT state, count(*) FROM jobs WHERE batch_id = ? GROUP BY state", arguments: [id.description]) {
            if let state = JobState(rawValue: row[0]) { batch.counts[state] = row[1] }
        }
        return batch
    }

    /// One more job of the batch finished: the batch finishes if it was the last.
    static func countFinished(in id: JobID, _ db: Database, _ batch: GroupCommitWriter.Batch) throws {
        guard let row = try Row.fetchOne(
            db.cachedStatement(sql: "UPDATE batches SET done = done + 1 WHERE id = ? RETURNING state, done, total"),
            arguments: [id.description]), let state = Batch.State(rawValue: row[0]) else { return }
        if BatchRules.isFinished(state: state, done: row[1], total: row[2]) { try finishBatch(id, db, batch) }
    }

    /// Marks the batch finished (once: the row is updated only while unfinished) and makes its
    /// callback job and webhook.
    static func finishBatch(_ id: JobID, _ db: Database, _ changes: GroupCommitWriter.Batch) throws {
        let now = Date()
        guard let row = try Row.fetchOne(db, sql: """
            UPDATE batches SET state = CASE state WHEN 'closed' THEN 'finished' ELSE state END, finished_at = ?
            WHERE id = ? AND finished_at IS NULL AND state IN ('closed', 'cancelled') RETURNING state
            """, arguments: [Rows.micros(now), id.description]) else { return }
        var batch = try fetchBatch(id, tenant: nil, db)
        if (row[0] as String) == Batch.State.finished.rawValue {
            let failed = try String.fetchAll(db, sql: "SELECT id FROM jobs WHERE batch_id = ? AND state = 'failed' ORDER BY seq LIMIT ?",
                                             arguments: [id.description, BatchRules.maxFailedIDs]).compactMap(JobID.init)
            if let request = BatchRules.callbackJob(for: batch, counts: batch.counts, failed: failed) {
                let job = Job(new: request, defaults: nil, now: now)
                try insert([job], db, changes)
                try db.execute(sql: "UPDATE batches SET callback_job_id = ? WHERE id = ?", arguments: [job.id.description, id.description])
                batch.callbackJobID = job.id
            }
        }
        if let url = batch.callbackURL {
            let delivery = Job(new: Webhook.deliveryJob(for: batch, url: url), defaults: nil, now: now)
            try insert([delivery], db, changes)
            try db.cachedStatement(sql: """
                INSERT INTO webhook_deliveries(id, job_id, tenant, url, event, created_at) VALUES (?, ?, ?, ?, ?, ?)
                """).execute(arguments: [delivery.id.description, id.description, batch.tenant, url,
                                         "batch." + (batch.state == .cancelled ? "cancelled" : "finished"), Rows.micros(now)])
        }
    }

    public func createBatch(_ new: NewBatch, jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> (Batch, [EnqueueResult]) {
        try new.validate()
        for job in jobs { try job.validateNames() }
        let callback = try new.callback.map { String(decoding: try JSON.encode($0), as: UTF8.self) }
        let onFailure = try new.onFailure.map { String(decoding: try JSON.encode($0), as: UTF8.self) }
        return try await writer.write() { db, batch in
            let now = Date()
            let id = JobID.make(now: now)
            try db.execute(sql: """
                INSERT INTO batches (id, tenant, state, callback, on_failure, callback_url, created_at) VALUES (?, ?, 'open', ?, ?, ?, ?)
                """, arguments: [id.description, new.tenant, callback, onFailure, new.callbackURL, Rows.micros(now)])
            var members = jobs
            for i in members.indices { members[i].batchID = id }
            let results = members.isEmpty ? [] : try Self.enqueue(members, defaults: defaults, depthLimits: depthLimits, db, batch)
            if !new.open { try Self.close(id, db, batch) }
            return (try Self.fetchBatch(id, tenant: nil, db), results)
        }
    }

    static func close(_ id: JobID, _ db: Database, _ batch: GroupCommitWriter.Batch) throws {
        guard let row = try Row.fetchOne(db, sql: """
            UPDATE batches SET state = 'closed', closed_at = ? WHERE id = ? AND state = 'open' RETURNING done, total
            """, arguments: [Rows.micros(Date()), id.description]) else { return }
        if BatchRules.isFinished(state: .closed, done: row[0], total: row[1]) { try finishBatch(id, db, batch) }
    }

    public func batch(_ id: JobID, tenant: String?) async throws -> Batch? {
        try await read { db in
            do { return try Self.fetchBatch(id, tenant: tenant, db) } catch SpoolError.batchNotFound { return nil }
        }
    }

    public func closeBatch(_ id: JobID, tenant: String?) async throws -> Batch {
        try await writer.write() { db, batch in
            let current = try Self.fetchBatch(id, tenant: tenant, db)
            guard current.state == .open else { throw SpoolError.conflict(reason: "batch \(id) is \(current.state.rawValue), not open") }
            try Self.close(id, db, batch)
            return try Self.fetchBatch(id, tenant: tenant, db)
        }
    }

    public func cancelBatch(_ id: JobID, tenant: String?) async throws -> Batch {
        try await writer.write() { db, batch in
            let current = try Self.fetchBatch(id, tenant: tenant, db)
            guard current.state == .open || current.state == .closed else {
                throw SpoolError.conflict(reason: "batch \(id) is \(current.state.rawValue)")
            }
            let now = Rows.micros(Date())
            try db.execute(sql: "UPDATE batches SET state = 'cancelled', closed_at = coalesce(closed_at, ?) WHERE id = ?",
                           arguments: [now, id.description])
            // Every unfinished member is cancelled first, then what follows each runs (a parent's
            // hook must not release a member that the cancel is about to reach).
            let rows = try Row.fetchAll(db, sql: """
                SELECT id, tenant, kind, attempt, queue, state, callback_url, has_children FROM jobs
                WHERE batch_id = ? AND state IN ('waiting', 'scheduled', 'pending', 'processing') ORDER BY seq
                """, arguments: [id.description])
            try db.execute(sql: """
                UPDATE jobs SET state = 'cancelled', cancel_reason = ?, finished_at = ?, lease_token = NULL, lease_expires_at = NULL
                WHERE batch_id = ? AND state IN ('waiting', 'scheduled', 'pending', 'processing')
                """, arguments: [BatchRules.cancelReason(id), now, id.description])
            for row in rows {
                let key = try Rows.key(row, queue: row[4])
                guard let from = JobState(rawValue: row[5]) else { continue }
                batch.transition(key, from: from, to: .cancelled)
                if from == .processing { batch.signal(.jobCancelled(key.id)) }
            }
            for row in rows {
                try Self.finished(try Rows.key(row, queue: row[4]), state: .cancelled, callbackURL: row[6], hasChildren: row[7], batchID: id, db, batch)
            }
            // A batch whose jobs had all finished already finishes now.
            if let row = try Row.fetchOne(db, sql: "SELECT done, total FROM batches WHERE id = ?", arguments: [id.description]),
               BatchRules.isFinished(state: .cancelled, done: row[0], total: row[1]) {
                try Self.finishBatch(id, db, batch)
            }
            return try Self.fetchBatch(id, tenant: tenant, db)
        }
    }

    // MARK: Leases

    /// The parents of leased jobs that have any, with their results.
    static func parentResults(_ jobs: [LeasedJob], _ db: Database) throws -> [LeasedJob] {
        guard jobs.contains(where: { !$0.job.dependsOn.isEmpty }) else { return jobs }
        let statement = try db.cachedStatement(sql: "SELECT id, kind, state, result FROM jobs WHERE id = ?")
        return try jobs.map { leased in
            var leased = leased
            leased.parents = try leased.job.dependsOn.compactMap { parent in
                guard let row = try Row.fetchOne(statement, arguments: [parent.description]),
                      let state = JobState(rawValue: row[2]) else { return nil }
                return ParentResult(id: parent, kind: row[1], state: state, result: (row[3] as String?).map { Data($0.utf8) })
            }
            return leased
        }
    }
}
