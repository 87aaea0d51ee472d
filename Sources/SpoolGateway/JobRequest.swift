import Foundation
import SpoolCore

/// Reads the JSON body of `POST /v1/jobs` into a `NewJob`, with a precise 422 for each field.
///
/// ```json
/// {"queue": "pdf", "kind": "pdf.render", "payload": {...}, "priority": 0,
///  "run_at": "2026-01-01T00:00:00Z" | "delay_seconds": 30, "max_attempts": 5,
///  "timeout_seconds": 60, "idempotency_key": "order-42", "callback_url": "https://...",
///  "tags": ["a"], "depends_on": ["<job id>" | "<ref>"], "on_parent_failure": "cancel" | "run",
///  "batch_id": "<open batch id>", "ref": "convert"}
/// ```
///
/// `ref` names a job of a batch request (`POST /v1/jobs/batch`, `POST /v1/batches`) so that
/// later jobs of the same request can name it in `depends_on`.
enum JobRequest {
    static let fields: Set<String> = [
        "queue", "kind", "payload", "priority", "run_at", "delay_seconds", "max_attempts",
        "timeout_seconds", "idempotency_key", "callback_url", "tags", "depends_on", "on_parent_failure",
        "batch_id", "ref", "tenant",
    ]

    /// The job of a request body, and its `ref`. `refs`: the refs of the earlier jobs of the
    /// same request (`nil` for a single job, which has none).
    static func parse(_ value: JSONValue, tenant: String, headerKey: String?, refs: [String: Int]? = nil,
                      now: Date = Date()) throws -> (job: NewJob, ref: String?) {
        var job = try parseFields(value, tenant: tenant, headerKey: headerKey, now: now)
        guard case .object(let body) = value else { throw Problem.validation("body", "must be a JSON object") }
        let ref = try string(body, "ref")
        if let ref {
            guard refs != nil else { throw Problem.validation("ref", "names a job of a batch request; a single job needs none") }
            guard NewJob.isValidName(ref, maxLength: 128), JobID(ref) == nil else {
                throw Problem.validation("ref", "must be 1-128 characters of A-Z a-z 0-9 _ . - : and not a job id")
            }
            guard refs?[ref] == nil else { throw Problem.validation("ref", "'\(ref)' is used by an earlier job of the request") }
        }
        if let raw = body["depends_on"] {
            guard case .array(let items) = raw else { throw Problem.validation("depends_on", "must be an array of job ids or refs") }
            guard items.count <= NewJob.maxParents else { throw Problem.validation("depends_on", "at most \(NewJob.maxParents) parents") }
            job.dependsOn = try items.map { item in
                guard case .string(let text) = item else { throw Problem.validation("depends_on", "must be an array of job ids or refs") }
                if let id = JobID(text) { return .job(id) }
                guard let refs else { throw Problem.validation("depends_on", "'\(text)' is not a job id") }
                guard let index = refs[text] else {
                    throw Problem.validation("depends_on", "'\(text)' is neither a job id nor the ref of an earlier job of the request")
                }
                return .request(index)
            }
        }
        if let policy = try string(body, "on_parent_failure") {
            guard let p = ParentFailurePolicy(rawValue: policy) else { throw Problem.validation("on_parent_failure", "must be 'cancel' or 'run'") }
            job.onParentFailure = p
        }
        if let batch = try string(body, "batch_id") {
            guard let id = JobID(batch) else { throw Problem.validation("batch_id", "'\(batch)' is not a batch id") }
            job.batchID = id
        }
        return (job, ref)
    }

    private static func parseFields(_ value: JSONValue, tenant: String, headerKey: String?, now: Date) throws -> NewJob {
        guard case .object(let body) = value else { throw Problem.validation("body", "must be a JSON object") }
        if let unknown = body.keys.filter({ !fields.contains($0) }).sorted().first {
            throw Problem.validation(unknown, "unknown field")
        }
        let queue = try string(body, "queue") ?? "default"
        guard let kind = try string(body, "kind") else { throw Problem.validation("kind", "is required") }
        let payload = body["payload"] ?? .object([:])
        let priority = try integer(body, "priority") ?? 0
        var runAt: Date?
        if let text = try string(body, "run_at") {
            guard let date = Timestamp.parse(text) else { throw Problem.validation("run_at", "must be an RFC 3339 timestamp") }
            runAt = date
        }
        if let delay = try number(body, "delay_seconds") {
            guard runAt == nil else { throw Problem.validation("delay_seconds", "give run_at or delay_seconds, not both") }
            guard delay >= 0, delay <= 366 * 86_400 else { throw Problem.validation("delay_seconds", "must be between 0 and one year") }
            runAt = now.addingTimeInterval(delay)
        }
        if let runAt, runAt.timeIntervalSince(now) > 366 * 86_400 || runAt.timeIntervalSince1970 < 946_684_800 {
            throw Problem.validation("run_at", "must be after 2000-01-01 and within a year from now")
        }
        let timeout = try number(body, "timeout_seconds").map { seconds -> Duration in
            guard seconds > 0, seconds <= 7 * 86_400 else { throw Problem.validation("timeout_seconds", "must be more than 0 and at most 7 days") }
            return .seconds(fractional: seconds)
        }
        let bodyKey = try string(body, "idempotency_key")
        if let bodyKey, let headerKey, bodyKey != headerKey {
            throw Problem.validation("idempotency_key", "differs from the Idempotency-Key header")
        }
        var tags: [String] = []
        if let raw = body["tags"] {
            guard case .array(let items) = raw else { throw Problem.validation("tags", "must be an array of strings") }
            tags = try items.map {
                guard case .string(let tag) = $0 else { throw Problem.validation("tags", "must be an array of strings") }
                return tag
            }
        }
        return NewJob(
            queue: queue, kind: kind, payload: payload.jsonData, priority: priority, runAt: runAt,
            maxAttempts: try integer(body, "max_attempts"), timeout: timeout,
            idempotencyKey: bodyKey ?? headerKey, callbackURL: try string(body, "callback_url"), tags: tags, tenant: tenant)
    }

    static func string(_ body: [String: JSONValue], _ field: String) throws -> String? {
        switch body[field] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        default: throw Problem.validation(field, "must be a string")
        }
    }

    private static func number(_ body: [String: JSONValue], _ field: String) throws -> Double? {
        switch body[field] {
        case nil, .null?: return nil
        case let value? where value.doubleValue?.isFinite == true: return value.doubleValue
        default: throw Problem.validation(field, "must be a number")
        }
    }

    private static func integer(_ body: [String: JSONValue], _ field: String) throws -> Int? {
        guard let n = try number(body, field) else { return nil }
        guard n.rounded() == n, abs(n) <= 1e9 else { throw Problem.validation(field, "must be an integer") }
        return Int(n)
    }
}
