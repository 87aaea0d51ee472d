import Foundation

/// Webhook deliveries: when a job with a callback URL reaches a terminal state, the store
/// schedules — in the same transaction — a delivery job on the internal ``queue``. A worker
/// runs it like any other job (retries with backoff, leases, timeouts), so a notification is
/// never lost to a crash, and every attempt is recorded for `GET /v1/jobs/{id}/deliveries`.
public enum Webhook {
    /// The internal queue delivery jobs run on.
    public static let queue = "spool.webhooks"
    /// The kind of a delivery job.
    public static let kind = "spool.webhook"
    /// Attempts before a delivery is given up: with ``queueConfiguration``'s backoff they span
    /// about a day (5 s, 10 s, 20 s, … capped at 4 h).
    public static let maxAttempts = 18
    /// The longest one delivery attempt may take, end to end.
    public static let attemptTimeout: Duration = .seconds(30)

    /// The settings of the internal queue: exponential backoff from 5 s, capped at 4 h.
    public static let queueConfiguration = QueueConfiguration(
        concurrency: 20, timeout: attemptTimeout, maxAttempts: maxAttempts, depthLimit: nil,
        backoff: Backoff(initial: .seconds(5), multiplier: 2, max: .seconds(4 * 3600), jitter: 0.1))

    /// The event type a terminal state is announced as (`job.completed`, `job.failed`,
    /// `job.cancelled`).
    public static func eventType(_ state: JobState) -> String { "job." + state.rawValue }

    /// The payload of a delivery job.
    public struct Payload: Codable, Sendable, Hashable {
        public var job_id: String
        public var url: String
        /// `job.completed`, `job.failed` or `job.cancelled`.
        public var event: String
        /// The job's status document as it was when it finished: what the receiver gets, even
        /// if the job is deleted or retried before the delivery succeeds.
        public var job: JobDocument?
        /// What is delivered when it is not a job's document (a batch's, for `batch.finished`).
        public var data: JSONValue?
        public init(jobID: JobID, url: String, event: String, job: JobDocument? = nil, data: JSONValue? = nil) {
            self.job_id = jobID.description; self.url = url; self.event = event; self.job = job; self.data = data
        }
    }

    /// A new random signing secret: `whsec_` and the base64 of 32 random bytes.
    public static func makeSecret() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return "whsec_" + Data(bytes).base64EncodedString()
    }

    /// The delivery job announcing that `batch` finished (`batch.finished`, or `batch.cancelled`).
    public static func deliveryJob(for batch: Batch, url: String) -> NewJob {
        let document = (try? JSON.encode(BatchDocument(batch))).flatMap { JSONValue(json: $0) }
        let payload = Payload(jobID: batch.id, url: url, event: "batch." + (batch.state == .cancelled ? "cancelled" : "finished"), data: document)
        return NewJob(queue: queue, kind: kind, payload: (try? JSON.encode(payload)) ?? Data("{}".utf8),
                      maxAttempts: maxAttempts, timeout: attemptTimeout, tenant: batch.tenant)
    }

    /// The delivery job for `job`, which just reached a terminal state (and has a callback URL).
    public static func deliveryJob(for job: Job) -> NewJob? {
        guard let url = job.callbackURL else { return nil }
        let payload = Payload(jobID: job.id, url: url, event: eventType(job.state), job: JobDocument(job))
        return NewJob(queue: queue, kind: kind, payload: (try? JSON.encode(payload)) ?? Data("{}".utf8),
                      maxAttempts: maxAttempts, timeout: attemptTimeout, tenant: job.tenant)
    }
}

/// One webhook notification about a job, and what became of it.
public struct WebhookDelivery: Sendable, Hashable {
    /// The delivery job's id; receivers see it as the `webhook-id` header (the same on every
    /// retry, so they can drop duplicates).
    public var id: JobID
    public var jobID: JobID
    public var url: String
    public var event: String
    public var createdAt: Date
    /// The delivery job's state: `completed` once a 2xx came back, `failed` once given up,
    /// otherwise waiting for (or in) its next attempt. `nil` if the delivery job was pruned.
    public var state: JobState?
    public var attempts: [WebhookAttempt]

    public init(id: JobID, jobID: JobID, url: String, event: String, createdAt: Date, state: JobState?, attempts: [WebhookAttempt]) {
        self.id = id; self.jobID = jobID; self.url = url; self.event = event
        self.createdAt = createdAt; self.state = state; self.attempts = attempts
    }

    /// `delivered`, `retrying` or `gave_up`, as clients see it.
    public var status: String {
        switch state {
        case .completed: return "delivered"
        case .failed, .cancelled: return "gave_up"
        case nil: return attempts.last?.succeeded == true ? "delivered" : "gave_up"
        default: return attempts.isEmpty ? "pending" : "retrying"
        }
    }
}

/// One try at delivering a webhook.
public struct WebhookAttempt: Sendable, Hashable, Codable {
    public var attempt: Int
    public var at: Date
    /// The receiver's HTTP status, if it answered.
    public var status_code: Int?
    public var duration_ms: Double
    /// Why the attempt failed (a connection error, a refused address, a non-2xx answer).
    public var error: String?

    public init(attempt: Int, at: Date, statusCode: Int?, durationMs: Double, error: String?) {
        self.attempt = attempt; self.at = at; self.status_code = statusCode; self.duration_ms = durationMs; self.error = error
    }

    public var succeeded: Bool { status_code.map { (200..<300).contains($0) } ?? false && error == nil }
}
