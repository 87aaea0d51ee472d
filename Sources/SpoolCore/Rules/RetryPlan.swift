import Foundation

/// Whether, and when, a failed attempt runs again: the same rule for in-process workers and
/// for remote workers reporting over HTTP.
public enum RetryPlan {
    /// The time of the next attempt, or `nil` when the job fails for good: it was not
    /// retryable, or that was its last attempt. `retryAfter` (the worker's own delay) beats the
    /// queue's backoff.
    public static func retryAt(attempt: Int, maxAttempts: Int, retryable: Bool, retryAfter: Duration?,
                               backoff: Backoff, now: Date) -> Date? {
        guard retryable, attempt < maxAttempts else { return nil }
        return now.addingTimeInterval((retryAfter ?? backoff.delay(afterFailures: attempt)).seconds)
    }

    /// The longest error message kept for an attempt.
    public static let maxMessageLength = 8192
}
