import Foundation
import SpoolCore

/// Reads the JSON body of `POST /v1/jobs` into a `NewJob`, with a precise 422 for each field.
///
/// ```json
/// {"queue": "pdf", "kind": "pdf.render", "payload": {...}, "priority": 0,
///  "run_at": "2026-01-01T00:00:00Z" | "delay_seconds": 30, "max_attempts": 5,
///  "timeout_seconds": 60, "idempotency_key": "order-42", "callback_url": "https://...",
///  "tags": ["a"]}
/// ```
enum JobRequest {
    static let fields: Set<String> = [
        "queue", "kind", "payload", "priority", "run_at", "delay_seconds", "max_attempts",
        "timeout_seconds", "idempotency_key", "callback_url", "tags",
    ]

    static func parse(_ value: JSONValue, tenant: String, headerKey: String?, now: Date = Date()) throws -> NewJob {
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

    private static func string(_ body: [String: JSONValue], _ field: String) throws -> String? {
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
