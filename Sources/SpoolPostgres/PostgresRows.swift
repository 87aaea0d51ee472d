import Foundation
import PostgresNIO
import SpoolCore

/// Conversions between rows of `spool_jobs` and the job model.
enum PGRows {
    /// The columns of a job, in the order ``job(_:)`` decodes them; `prefix` qualifies them
    /// (`spool_jobs.`) where a statement joins another relation.
    static func columns(_ prefix: String = "") -> String {
        leaseColumns(prefix) + ", \(prefix)on_parent_failure, \(prefix)parents_left, \(prefix)cancel_reason"
    }

    /// What a worker needs of a job it leases: every column but the workflow ones that matter
    /// only to status documents (fewer values per row on the hot path).
    static func leaseColumns(_ prefix: String = "") -> String {
        let p = prefix
        return """
            \(p)id, \(p)tenant, \(p)queue, \(p)kind, \(p)payload, \(p)priority, \(p)state, \(p)attempt, \(p)max_attempts,
            \(p)run_at, \(p)timeout_ms, \(p)progress_percent, \(p)progress_message, \(p)result, \(p)errors::text,
            \(p)created_at, \(p)started_at, \(p)finished_at, \(p)idempotency_key, \(p)callback_url, \(p)tags::text,
            \(p)worker_id, \(p)lease_expires_at, \(p)depends_on, \(p)batch_id
            """
    }

    /// The number of columns in ``columns(_:)`` and ``leaseColumns(_:)``; a query may select more after them.
    static let columnCount = 28
    static let leaseColumnCount = 25

    struct CorruptRow: Error, CustomStringConvertible {
        var description: String
    }

    static func job(_ row: PostgresRow) throws -> Job {
        let (id, tenant, queue, kind, payload, priority, stateText, attempt, maxAttempts, runAt, timeoutMs,
             percent, message, result, errorsText, createdAt, startedAt, finishedAt, key, callback, tagsText,
             worker, leaseExpires) = try row.decode(
                (UUID, String, String, String, String, Int, String, Int, Int, Date, Int64, Double?, String?, String?,
                 String, Date, Date?, Date?, String?, String?, String, String?, Date?).self)
        guard let state = JobState(rawValue: stateText) else { throw CorruptRow(description: "bad state of job \(id)") }
        let errors = errorsText == "[]" ? [] : try JSON.decode([AttemptError].self, from: Data(errorsText.utf8))
        let tags = tagsText == "[]" ? [] : try JSON.decode([String].self, from: Data(tagsText.utf8))
        var job = Job(
            id: JobID(uuid: id), tenant: tenant, queue: queue, kind: kind, payload: Data(payload.utf8), priority: priority,
            state: state, attempt: attempt, maxAttempts: maxAttempts, runAt: runAt, timeout: .milliseconds(timeoutMs),
            progress: percent.map { JobProgress(percent: $0, message: message) }, result: result.map { Data($0.utf8) },
            errors: errors, createdAt: createdAt, startedAt: startedAt, finishedAt: finishedAt, idempotencyKey: key,
            callbackURL: callback, tags: tags, workerID: worker, leaseExpiresAt: leaseExpires)
        let cells = row.makeRandomAccess()
        if let parents = try cells[23].decode(String?.self) {
            job.dependsOn = try JSON.decode([String].self, from: Data(parents.utf8)).compactMap(JobID.init)
        }
        job.batchID = try cells[24].decode(UUID?.self).map(JobID.init(uuid:))
        guard cells.count >= columnCount, cells[25].columnName == "on_parent_failure" else { return job }  // `leaseColumns`
        job.onParentFailure = try cells[25].decode(String?.self).flatMap(ParentFailurePolicy.init(rawValue:)) ?? .cancel
        if state == .waiting { job.parentsLeft = try cells[26].decode(Int.self) }
        job.cancelReason = try cells[27].decode(String?.self)
        return job
    }

    /// A job's identity from a row `id, tenant, kind, attempt, queue`.
    static func key(_ row: PostgresRow) throws -> ChangeSet.JobKey {
        let (id, tenant, kind, attempt, queue) = try row.decode((UUID, String, String, Int, String).self)
        return .init(id: JobID(uuid: id), queue: queue, tenant: tenant, kind: kind, attempt: attempt)
    }

    static func jsonText(_ tags: [String]) -> String {
        tags.isEmpty ? "[]" : String(decoding: (try? JSON.encode(tags)) ?? Data("[]".utf8), as: UTF8.self)
    }
}

extension PostgresConnection {
    /// All rows of a query that returns jobs.
    func jobs(_ query: PostgresQuery, logger: Logger) async throws -> [Job] {
        var jobs: [Job] = []
        for try await row in try await self.query(query, logger: logger) { jobs.append(try PGRows.job(row)) }
        return jobs
    }

    /// All rows of a query that returns `id, tenant, kind, attempt, queue` (and maybe more).
    func keys(_ query: PostgresQuery, logger: Logger) async throws -> [(ChangeSet.JobKey, PostgresRow)] {
        var keys: [(ChangeSet.JobKey, PostgresRow)] = []
        for try await row in try await self.query(query, logger: logger) { keys.append((try PGRows.key(row), row)) }
        return keys
    }
}
