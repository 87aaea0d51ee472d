import Foundation

/// The rule for a job whose worker stopped heartbeating (its lease expired), kept by every
/// store: the lost attempt is recorded as an error, and the job goes back to `pending` while it
/// has attempts left, else to `failed` (the dead letters).
public enum LeaseRescue {
    /// The most jobs one rescue call returns; the lease rescuer calls again while calls are full.
    public static let batchLimit = 1000
    /// The error's `reason`.
    public static let reason = "lease_expired"
    /// The error message is `messagePrefix + worker id + messageSuffix` (stores that build it in
    /// SQL bind these two parts).
    public static let messagePrefix = "lease expired: worker "
    public static let messageSuffix = " stopped heartbeating"

    /// Where a rescued job goes.
    public static func outcome(attempt: Int, maxAttempts: Int) -> JobState {
        attempt < maxAttempts ? .pending : .failed
    }

    /// The error recorded for the lost attempt.
    public static func error(attempt: Int, worker: String?, at: Date) -> AttemptError {
        AttemptError(attempt: attempt, message: messagePrefix + (worker ?? "?") + messageSuffix, at: at, reason: reason, worker: worker)
    }
}
