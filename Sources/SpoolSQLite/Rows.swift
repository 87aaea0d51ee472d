import Foundation
import GRDB
import SpoolCore

/// Conversions between table rows and the job model.
enum Rows {
    static let columns = """
        id, tenant, queue, kind, payload, priority, state, attempt, max_attempts, run_at, timeout_ms,
        progress_percent, progress_message, result, errors, created_at, started_at, finished_at,
        idempotency_key, callback_url, tags, worker_id, lease_expires_at
        """

    struct CorruptRow: Error, CustomStringConvertible {
        var description: String
    }

    static func job(_ row: Row) throws -> Job {
        guard let id = JobID(row["id"] as String) else { throw CorruptRow(description: "bad job id \(row["id"] as String)") }
        guard let state = JobState(rawValue: row["state"]) else { throw CorruptRow(description: "bad state of job \(id)") }
        let progress: JobProgress? = (row["progress_percent"] as Double?).map {
            JobProgress(percent: $0, message: row["progress_message"])
        }
        let errorsText: String = row["errors"]
        let errors = errorsText == "[]" ? [] : try JSON.decode([AttemptError].self, from: Data(errorsText.utf8))
        let tagsText: String = row["tags"]
        let tags = tagsText == "[]" ? [] : try JSON.decode([String].self, from: Data(tagsText.utf8))
        return Job(
            id: id, tenant: row["tenant"], queue: row["queue"], kind: row["kind"],
            payload: Data((row["payload"] as String).utf8), priority: row["priority"], state: state,
            attempt: row["attempt"], maxAttempts: row["max_attempts"], runAt: date(row["run_at"]),
            timeout: .milliseconds(row["timeout_ms"] as Int64), progress: progress,
            result: (row["result"] as String?).map { Data($0.utf8) }, errors: errors,
            createdAt: date(row["created_at"]), startedAt: (row["started_at"] as Int64?).map(date),
            finishedAt: (row["finished_at"] as Int64?).map(date), idempotencyKey: row["idempotency_key"],
            callbackURL: row["callback_url"], tags: tags, workerID: row["worker_id"],
            leaseExpiresAt: (row["lease_expires_at"] as Int64?).map(date))
    }

    static func micros(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1e6).rounded()) }
    static func date(_ micros: Int64) -> Date { Date(timeIntervalSince1970: Double(micros) / 1e6) }

    static func jsonText(_ tags: [String]) -> String {
        tags.isEmpty ? "[]" : String(decoding: (try? JSON.encode(tags)) ?? Data("[]".utf8), as: UTF8.self)
    }

    /// Whether two JSON documents mean the same, whatever their spacing and key order.
    static func sameJSON(_ a: Data, _ b: Data) -> Bool {
        if a == b { return true }
        guard let x = try? JSONSerialization.jsonObject(with: a, options: [.fragmentsAllowed]),
              let y = try? JSONSerialization.jsonObject(with: b, options: [.fragmentsAllowed]) else { return false }
        let canonical: (Any) -> Data? = { try? JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys, .fragmentsAllowed]) }
        return canonical(x) != nil && canonical(x) == canonical(y)
    }
}
