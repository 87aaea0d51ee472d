import Foundation

/// Errors of the store and the engine that a client can act on. The gateway maps each one
/// to an HTTP status.
public enum SpoolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Bad input (maps to 422).
    case invalid(field: String, reason: String)
    /// No such job, or it belongs to another tenant (404).
    case notFound(JobID)
    /// The job is in a state that does not allow the operation (409).
    case invalidTransition(id: JobID, from: JobState, operation: String)
    /// The idempotency key is taken by a different request (409).
    case idempotencyConflict(key: String, existing: JobID)
    /// The queue holds as many waiting jobs as its depth limit allows (429).
    case queueFull(queue: String, limit: Int, retryAfter: Duration)
    /// The worker's lease is no longer valid: it expired and the job moved on, or the job was cancelled.
    case leaseLost(JobID)
    /// The store cannot be reached or is overloaded (503).
    case unavailable(reason: String)
    /// No such batch, or it belongs to another tenant (404).
    case batchNotFound(JobID)
    /// Something else that does not exist, or belongs to another tenant (404).
    case notFoundNamed(String)
    /// The resource is in a state that does not allow the operation (409).
    case conflict(reason: String)

    public var description: String {
        switch self {
        case let .invalid(field, reason): "invalid \(field): \(reason)"
        case let .notFound(id): "job \(id) not found"
        case let .invalidTransition(id, from, operation): "cannot \(operation) job \(id): it is \(from.rawValue)"
        case let .idempotencyConflict(key, existing): "idempotency key '\(key)' already belongs to job \(existing), which was made from a different request"
        case let .queueFull(queue, limit, _): "queue '\(queue)' is full (depth limit \(limit)); try again later"
        case let .leaseLost(id): "lease on job \(id) is no longer held by this worker"
        case let .unavailable(reason): "store unavailable: \(reason)"
        case let .batchNotFound(id): "batch \(id) not found"
        case let .notFoundNamed(what): what
        case let .conflict(reason): reason
        }
    }
}

/// Errors a handler throws to steer what happens to the job.
///
/// Any other error counts as a retryable failure.
public enum JobFailure: Error, Sendable, CustomStringConvertible {
    /// Do not retry: the job goes straight to `failed`.
    case nonRetryable(String)
    /// Retry (if attempts are left) after this delay instead of the queue's backoff.
    case retry(String, after: Duration)

    public var description: String {
        switch self {
        case let .nonRetryable(message): message
        case let .retry(message, _): message
        }
    }
}
