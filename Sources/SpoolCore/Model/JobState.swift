/// The state of a job, as clients see it.
///
/// Every transition a job can make, and who makes it:
///
/// ```
///  enqueue ──▶ waiting ──(its last parent finished)─────────▶ pending, or scheduled if its run-at is ahead
///  waiting ──(a parent failed for good or was cancelled)─▶ cancelled   (unless the job runs anyway)
///  enqueue ──▶ scheduled ──(run_at reached)──────────────▶ pending
///  enqueue ──▶ pending ──(leased by a worker)─────────────▶ processing
///  processing ──(handler returned)────────────────────────▶ completed
///  processing ──(error, attempts left, backoff > 0)───────▶ scheduled   (a retry waiting out its backoff)
///  processing ──(error, attempts left, no backoff)────────▶ pending
///  processing ──(error, last attempt or non-retryable)────▶ failed      (the dead-letter queue)
///  processing ──(lease expired: worker died or stalled)───▶ pending, or failed if it was the last attempt
///  processing ──(worker shut down gracefully)─────────────▶ pending     (the attempt is given back, not counted)
///  scheduled | pending | processing ──(cancel)────────────▶ cancelled   (a running handler is asked to stop)
///  failed | cancelled ──(retry by hand)───────────────────▶ pending     (with a fresh set of attempts)
///  cancelled ──(the parent that cancelled it retried)─────▶ waiting     (re-armed)
///  completed | failed | cancelled ──(pruned or deleted)───▶ (gone)
/// ```
///
/// `completed`, `failed` and `cancelled` are terminal: only a retry by hand leaves them.
public enum JobState: String, Sendable, Codable, CaseIterable, Hashable {
    /// Enqueued with parent jobs (`depends_on`) that have not all finished.
    case waiting
    case scheduled
    case pending
    case processing
    case completed
    case failed
    case cancelled

    /// Terminal states: the job will not run again unless retried by hand.
    public var isFinished: Bool {
        switch self {
        case .completed, .failed, .cancelled: true
        case .waiting, .scheduled, .pending, .processing: false
        }
    }

    /// States that count towards a queue's depth limit: jobs ready to run now or at their
    /// run-at (`pending` + `scheduled`; `waiting` jobs wait for their parents, not for a worker).
    public var isQueued: Bool { self == .scheduled || self == .pending }

    /// Whether a client or operator may cancel a job in this state.
    public var canCancel: Bool { !isFinished }

    /// Whether a job in this state may be retried by hand.
    public var canRetry: Bool { self == .failed || self == .cancelled }
}
