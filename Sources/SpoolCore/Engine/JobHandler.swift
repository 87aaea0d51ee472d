import Foundation
import Logging

/// A kind of job: its payload type and the code that runs it.
///
/// ```swift
/// struct SendWelcomeEmail: JobHandler {
///     struct Payload: Codable, Sendable { var userID: Int }
///     static let kind = "email.welcome"
///     func run(_ payload: Payload, context: JobContext) async throws -> String {
///         try await context.progress(50, "rendering")
///         return "sent"
///     }
/// }
/// spool.register(SendWelcomeEmail())
/// ```
///
/// A handler may run more than once for one job (at-least-once): make it idempotent.
/// Throw ``JobFailure/nonRetryable(_:)`` for errors a retry cannot fix; any other error is
/// retried with backoff until the job's attempts are used up.
public protocol JobHandler: Sendable {
    associatedtype Payload: Decodable & Sendable
    associatedtype Output: Encodable & Sendable
    /// The name clients use to ask for this handler, e.g. `"pdf.render"`.
    static var kind: String { get }
    func run(_ payload: Payload, context: JobContext) async throws -> Output
}

/// A handler with its types erased, as the engine stores it.
public struct AnyJobHandler: Sendable {
    public let kind: String
    /// Decodes the payload, runs, and encodes the result (`nil` for no result).
    public let run: @Sendable (Data, JobContext) async throws -> Data?

    public init(kind: String, run: @escaping @Sendable (Data, JobContext) async throws -> Data?) {
        self.kind = kind
        self.run = run
    }

    public init<H: JobHandler>(_ handler: H) {
        self.init(kind: H.kind) { data, context in
            let payload: H.Payload
            do {
                payload = try JSON.decode(H.Payload.self, from: data)
            } catch {
                // A payload the handler cannot read will not become readable on retry.
                throw JobFailure.nonRetryable("payload does not match \(H.kind): \(error)")
            }
            let output = try await handler.run(payload, context: context)
            if output is Void || output is NoResult { return nil }
            return try JSON.encode(output)
        }
    }
}

/// Thrown by a handler that handed its job over to someone who reports the outcome later with
/// the attempt's lease token: a service that answered `202 Accepted`. The engine records no
/// outcome and frees the worker's slot; it extends the lease to `until` (the job's deadline),
/// so the job stays `processing` until the report comes, across restarts of this worker. If
/// none comes by then, the lease expires and the job is retried like one whose worker vanished.
public struct HandedOff: Error, CustomStringConvertible {
    public var until: Date
    public init(until: Date) { self.until = until }
    public var description: String { "handed over; the outcome is reported with the lease token until \(until)" }
}

/// A handler's own time limit ran out (recorded with reason `timeout`, and retried).
public struct AttemptTimedOut: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The result of a handler that has nothing to return.
public struct NoResult: Codable, Sendable, Hashable {
    public init() {}
}

/// What a running handler knows about its job and how it talks back.
public final class JobContext: Sendable {
    public let job: Job
    public let lease: LeaseToken
    /// The job's parents (``NewJob/dependsOn``) with their results, in the order it named them.
    public let parents: [ParentResult]
    private let baseLogger: Logger
    private let report: @Sendable (JobProgress) async throws -> Void

    /// The context of a job leased from `store` (the engine makes these; so does `SpoolTesting`).
    public convenience init(job: Job, lease: LeaseToken, parents: [ParentResult] = [], store: any JobStore, logger: Logger) {
        self.init(job: job, lease: lease, parents: parents, logger: logger) { progress in
            try await store.reportProgress(job.id, lease: lease, progress: progress)
        }
    }

    /// The context of a job leased elsewhere (a remote worker reports progress over HTTP).
    public init(job: Job, lease: LeaseToken, parents: [ParentResult] = [], logger: Logger,
                reportProgress: @escaping @Sendable (JobProgress) async throws -> Void) {
        self.job = job
        self.lease = lease
        self.parents = parents
        self.baseLogger = logger
        self.report = reportProgress
    }

    /// A logger whose entries carry the job id, kind and attempt.
    public var logger: Logger {
        var logger = baseLogger
        logger[metadataKey: "job"] = "\(job.id)"
        logger[metadataKey: "kind"] = "\(job.kind)"
        logger[metadataKey: "attempt"] = "\(job.attempt)"
        return logger
    }

    public var id: JobID { job.id }
    /// 1 on the first attempt.
    public var attempt: Int { job.attempt }
    public var maxAttempts: Int { job.maxAttempts }
    public var isLastAttempt: Bool { job.attempt >= job.maxAttempts }

    /// The result of the parent `id` decoded as `T` (`nil` if it has none, or is not a parent).
    public func parentResult<T: Decodable>(_ id: JobID, as type: T.Type) throws -> T? {
        guard let data = parents.first(where: { $0.id == id })?.result else { return nil }
        return try JSON.decode(T.self, from: data)
    }

    /// Records progress (0-100) and an optional message, visible to clients at once.
    /// Throws ``SpoolError/leaseLost(_:)`` if this worker no longer holds the job.
    public func progress(_ percent: Double, _ message: String? = nil) async throws {
        try await report(JobProgress(percent: percent, message: message))
    }

    /// Whether the job was cancelled, timed out or lost its lease. Long loops should check it
    /// (or call `try Task.checkCancellation()`).
    public var isCancelled: Bool { Task.isCancelled }
}
