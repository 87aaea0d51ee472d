import Foundation

/// A group of jobs followed as one: its callback job runs once when every job has finished.
///
/// A batch is `open` while jobs may still join it, `closed` once they may not (it finishes when
/// its last job does), then `finished`; or `cancelled` (its unfinished jobs are cancelled and
/// no callback runs).
public struct Batch: Sendable, Hashable {
    public enum State: String, Sendable, Codable, Hashable, CaseIterable {
        case open, closed, finished, cancelled
    }

    public var id: JobID
    public var tenant: String
    public var state: State
    /// Jobs in the batch.
    public var total: Int
    /// Jobs of the batch in a terminal state.
    public var done: Int
    /// Jobs per state (read with the batch).
    public var counts: [JobState: Int]
    public var callback: BatchCallback?
    public var onFailure: BatchCallback?
    public var callbackURL: String?
    /// The callback job made when the batch finished (`callback`, or `onFailure`).
    public var callbackJobID: JobID?
    public var createdAt: Date
    public var closedAt: Date?
    public var finishedAt: Date?

    public init(id: JobID, tenant: String, state: State, total: Int, done: Int, counts: [JobState: Int] = [:],
                callback: BatchCallback?, onFailure: BatchCallback?, callbackURL: String?, callbackJobID: JobID?,
                createdAt: Date, closedAt: Date?, finishedAt: Date?) {
        self.id = id; self.tenant = tenant; self.state = state; self.total = total; self.done = done; self.counts = counts
        self.callback = callback; self.onFailure = onFailure; self.callbackURL = callbackURL; self.callbackJobID = callbackJobID
        self.createdAt = createdAt; self.closedAt = closedAt; self.finishedAt = finishedAt
    }
}

/// The job a batch makes when it finishes.
public struct BatchCallback: Sendable, Hashable, Codable {
    public var queue: String
    public var kind: String
    /// Handed to the callback as `payload`, next to the batch's figures.
    public var payload: JSONValue?
    /// The callback job's attempts and timeout (its queue's when the batch is created, if not given).
    public var max_attempts: Int?
    public var timeout_seconds: Double?
    public init(queue: String = "default", kind: String, payload: JSONValue? = nil, maxAttempts: Int? = nil, timeoutSeconds: Double? = nil) {
        self.queue = queue; self.kind = kind; self.payload = payload; self.max_attempts = maxAttempts; self.timeout_seconds = timeoutSeconds
    }
}

/// A request to create a batch.
public struct NewBatch: Sendable, Hashable {
    public var tenant: String
    /// Runs once every job of the batch has finished (unless `onFailure` runs instead).
    public var callback: BatchCallback?
    /// Runs instead of `callback` when a job of the batch failed for good.
    public var onFailure: BatchCallback?
    /// Gets one signed `batch.finished` delivery when the batch finishes.
    public var callbackURL: String?
    /// Whether jobs may be added later (then the batch finishes only after it is closed).
    public var open: Bool

    public init(tenant: String = NewJob.defaultTenant, callback: BatchCallback? = nil, onFailure: BatchCallback? = nil,
                callbackURL: String? = nil, open: Bool = false) {
        self.tenant = tenant; self.callback = callback; self.onFailure = onFailure; self.callbackURL = callbackURL; self.open = open
    }

    public func validate() throws(SpoolError) {
        guard NewJob.isValidName(tenant, maxLength: 128) else { throw .invalid(field: "tenant", reason: "must be 1-128 characters of A-Z a-z 0-9 _ . - :") }
        for (field, callback) in [("callback", callback), ("on_failure", onFailure)] {
            guard let callback else { continue }
            let job = NewJob(queue: callback.queue, kind: callback.kind, tenant: tenant)
            do { try job.validateNames() } catch { throw .invalid(field: "\(field).\(error.field)", reason: error.reason) }
        }
        if let url = callbackURL {
            let probe = NewJob(kind: "probe", callbackURL: url)
            do { try probe.validate() } catch { throw .invalid(field: "callback_url", reason: error.reason) }
        }
    }
}

extension SpoolError {
    /// The field an `invalid` error names (empty for other errors).
    var field: String { if case .invalid(let field, _) = self { field } else { "" } }
    var reason: String { if case .invalid(_, let reason) = self { reason } else { description } }
}

/// The rules of batches, kept by every store.
public enum BatchRules {
    /// The figures a callback job gets as `batch`.
    public struct Figures: Sendable, Hashable, Codable {
        public var id: String
        public var total: Int
        public var completed: Int
        public var failed: Int
        public var cancelled: Int
        /// Failed jobs' ids (at most ``maxFailedIDs``).
        public var failed_job_ids: [String]
    }

    public static let maxFailedIDs = 1000

    /// The callback job of a batch that just finished: `onFailure` if a job failed for good and
    /// it is set, otherwise `callback`; `nil` when there is none.
    public static func callbackJob(for batch: Batch, counts: [JobState: Int], failed: [JobID]) -> NewJob? {
        let failedCount = counts[.failed] ?? 0
        guard let callback = (failedCount > 0 ? batch.onFailure : nil) ?? batch.callback else { return nil }
        struct Payload: Encodable { var batch: Figures; var payload: JSONValue? }
        let figures = Figures(id: batch.id.description, total: batch.total, completed: counts[.completed] ?? 0, failed: failedCount,
                              cancelled: counts[.cancelled] ?? 0, failed_job_ids: failed.prefix(maxFailedIDs).map(\.description))
        let payload = (try? JSON.encode(Payload(batch: figures, payload: callback.payload))) ?? Data("{}".utf8)
        return NewJob(queue: callback.queue, kind: callback.kind, payload: payload, maxAttempts: callback.max_attempts,
                      timeout: callback.timeout_seconds.map { .seconds(fractional: $0) }, tenant: batch.tenant)
    }

    /// Whether a batch whose counters read so has just finished.
    public static func isFinished(state: Batch.State, done: Int, total: Int) -> Bool {
        (state == .closed || state == .cancelled) && done >= total
    }

    /// The reason recorded on the jobs a batch cancel stops.
    public static func cancelReason(_ batch: JobID) -> String { "batch \(batch) was cancelled" }
}

/// A batch as `GET /v1/batches/{id}` shows it.
public struct BatchDocument: Sendable, Codable, Hashable {
    public var id: String
    public var tenant: String
    public var state: String
    public var total: Int
    public var counts: [String: Int]
    public var callback: BatchCallback?
    public var on_failure: BatchCallback?
    public var callback_url: String?
    public var callback_job_id: String?
    public var created_at: String
    public var closed_at: String?
    public var finished_at: String?

    public init(_ batch: Batch) {
        id = batch.id.description; tenant = batch.tenant; state = batch.state.rawValue; total = batch.total
        counts = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0.rawValue, batch.counts[$0] ?? 0) })
        callback = batch.callback; on_failure = batch.onFailure; callback_url = batch.callbackURL
        callback_job_id = batch.callbackJobID?.description
        created_at = Timestamp.format(batch.createdAt)
        closed_at = batch.closedAt.map(Timestamp.format); finished_at = batch.finishedAt.map(Timestamp.format)
    }
}
