import Foundation
import GRDB
import SpoolCore

/// Conversions between table rows and the job model.
enum Rows {
    /// What a worker needs of a job it leases: every column but the workflow ones that matter
    /// only to status documents (a lease copies fewer values per row on the hot path).
    static let leaseColumns = """
        id, tenant, queue, kind, payload, priority, state, attempt, max_attempts, run_at, timeout_ms,
        progress_percent, progress_message, result, errors, created_at, started_at, finished_at,
        idempotency_key, callback_url, tags, worker_id, lease_expires_at, depends_on, batch_id
        """
    static let columns = leaseColumns + ", on_parent_failure, parents_left, cancel_reason"
    /// The number of columns in `columns`; a query may select more after them.
    static let columnCount = 28

    struct CorruptRow: Error, CustomStringConvertible {
        var description: String
    }

    /// Decodes a row that starts with `columns`, by position (looking columns up by name is
    /// slow on the hot path).
    static func job(_ row: Row) throws -> Job {
        let idText: String = row[0]
        guard let id = JobID(idText) else { throw CorruptRow(description: "bad job id \(idText)") }
        let stateText: String = row[6]
        guard let state = JobState(rawValue: stateText) else { throw CorruptRow(description: "bad state of job \(id)") }
        let progress: JobProgress? = (row[11] as Double?).map { JobProgress(percent: $0, message: row[12]) }
        let errorsText: String = row[14]
        let errors = errorsText == "[]" ? [] : try JSON.decode([AttemptError].self, from: Data(errorsText.utf8))
        let tags = try strings(row[20])
        var job = Job(
            id: id, tenant: row[1], queue: row[2], kind: row[3],
            payload: Data((row[4] as String).utf8), priority: row[5], state: state,
            attempt: row[7], maxAttempts: row[8], runAt: date(row[9]),
            timeout: .milliseconds(row[10] as Int64), progress: progress,
            result: (row[13] as String?).map { Data($0.utf8) }, errors: errors,
            createdAt: date(row[15]), startedAt: (row[16] as Int64?).map(date),
            finishedAt: (row[17] as Int64?).map(date), idempotencyKey: row[18],
            callbackURL: row[19], tags: tags, workerID: row[21],
            leaseExpiresAt: (row[22] as Int64?).map(date))
        // Workflow columns, decoded only when set (plain jobs, the hot path, have none).
        if !row.hasNull(atIndex: 23) { job.dependsOn = try strings(row[23]).compactMap(JobID.init) }
        if !row.hasNull(atIndex: 24) { job.batchID = JobID(row[24] as String) }
        guard row.count >= columnCount else { return job }  // `leaseColumns`
        if !row.hasNull(atIndex: 25) { job.onParentFailure = ParentFailurePolicy(rawValue: row[25]) ?? .cancel }
        if state == .waiting { job.parentsLeft = row[26] }
        if !row.hasNull(atIndex: 27) { job.cancelReason = row[27] }
        return job
    }

    /// A job's identity from a row that starts with `id, tenant, kind, attempt`.
    static func key(_ row: Row, queue: String) throws -> ChangeSet.JobKey {
        let text: String = row[0]
        guard let id = JobID(text) else { throw CorruptRow(description: "bad job id \(text)") }
        return .init(id: id, queue: queue, tenant: row[1], kind: row[2], attempt: row[3])
    }

    static func micros(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1e6).rounded()) }
    static func date(_ micros: Int64) -> Date { Date(timeIntervalSince1970: Double(micros) / 1e6) }

    /// A JSON array of strings as stored (the inverse of ``jsonText(_:)``).
    static func strings(_ text: String) throws -> [String] {
        text == "[]" ? [] : try JSON.decode([String].self, from: Data(text.utf8))
    }

    static func jsonText(_ tags: [String]) -> String {
        tags.isEmpty ? "[]" : String(decoding: (try? JSON.encode(tags)) ?? Data("[]".utf8), as: UTF8.self)
    }
}
