import Foundation

/// A parent named by a job request.
public enum ParentReference: Sendable, Hashable {
    /// A job that exists already (of the same tenant).
    case job(JobID)
    /// The request at this index of the same enqueue call (it must come earlier): a whole DAG
    /// is written in one atomic call, and a cycle cannot be expressed.
    case request(Int)
}

/// What a waiting job does when one of its parents fails for good or is cancelled.
public enum ParentFailurePolicy: String, Sendable, Codable, Hashable, CaseIterable {
    /// The job is cancelled too (with a reason naming the parent), and so are its own waiting
    /// descendants. Retrying the parent by hand re-arms them.
    case cancel
    /// The job runs anyway once every parent has finished, whatever their outcome.
    case run
}

/// A parent's outcome, as the child's handler sees it.
public struct ParentResult: Sendable, Hashable {
    public var id: JobID
    public var kind: String
    public var state: JobState
    /// The parent's result (JSON text), when it completed with one.
    public var result: Data?
    public init(id: JobID, kind: String, state: JobState, result: Data?) {
        self.id = id; self.kind = kind; self.state = state; self.result = result
    }
}

/// A parent as a leased job carries it over HTTP: `{"id", "kind", "state", "result"}`.
public struct ParentDocument: Sendable, Codable, Hashable {
    public var id: String
    public var kind: String
    public var state: JobState
    public var result: JSONValue?
    public init(_ parent: ParentResult) {
        id = parent.id.description; kind = parent.kind; state = parent.state
        result = parent.result.flatMap { JSONValue(json: $0) }
    }
    /// The parent as the engine's types know it.
    public var parentResult: ParentResult? {
        JobID(id).map { ParentResult(id: $0, kind: kind, state: state, result: result.map(\.jsonData)) }
    }
}

/// The rules of job dependencies, kept by every store (which supplies the rows and writes).
public enum DependencyRules {
    /// What a parent's state means to a child.
    public enum ParentOutcome: Sendable, Equatable {
        /// Not finished: the child waits for it.
        case unfinished
        /// Finished in a way that lets the child go on.
        case done
        /// Failed for good or cancelled: a child with the `cancel` policy is cancelled.
        case blocking
    }

    public static func outcome(of parent: JobState, policy: ParentFailurePolicy) -> ParentOutcome {
        switch parent {
        case .completed: return .done
        case .failed, .cancelled: return policy == .run ? .done : .blocking
        case .waiting, .scheduled, .pending, .processing: return .unfinished
        }
    }

    /// Where a job with parents stands, given its parents' states (by id).
    public enum Standing: Sendable, Equatable {
        /// Waits for `parentsLeft` parents.
        case waiting(parentsLeft: Int)
        /// Every parent finished: the job is ready (pending, or scheduled until its run-at).
        case ready
        /// A parent failed for good or was cancelled: the job is cancelled because of it.
        case cancelled(by: JobID, reason: String)
    }

    public static func standing(parents: [(JobID, JobState)], policy: ParentFailurePolicy) -> Standing {
        var left = 0
        for (id, state) in parents {
            switch outcome(of: state, policy: policy) {
            case .unfinished: left += 1
            case .done: break
            case .blocking: return .cancelled(by: id, reason: cancelReason(parent: id, state: state))
            }
        }
        return left > 0 ? .waiting(parentsLeft: left) : .ready
    }

    /// The reason recorded on a job cancelled because of its parent.
    public static func cancelReason(parent: JobID, state: JobState) -> String {
        "parent job \(parent) \(state == .failed ? "failed" : "was cancelled")"
    }

    /// Where a job with parents goes when retried by hand: `waiting` for its unfinished parents,
    /// or `pending`; refused while a parent that failed or was cancelled blocks it (retrying
    /// that parent re-arms it).
    public static func afterRetry(_ id: JobID, parents: [(JobID, JobState)], policy: ParentFailurePolicy) throws(SpoolError) -> (state: JobState, parentsLeft: Int) {
        switch standing(parents: parents, policy: policy) {
        case .waiting(let left): return (.waiting, left)
        case .ready: return (.pending, 0)
        case .cancelled(let parent, _):
            throw .conflict(reason: "cannot retry job \(id) while its parent job \(parent) has failed or is cancelled: retry the parent (that re-arms this job)")
        }
    }

    /// The state a job takes when it becomes ready.
    public static func readyState(runAt: Date, now: Date) -> JobState { runAt > now ? .scheduled : .pending }
}

extension SpoolError {
    static func badParent(_ index: Int?, _ parent: String, _ why: String) -> SpoolError {
        .invalid(field: index.map { "jobs[\($0)].depends_on" } ?? "depends_on", reason: "\(parent): \(why)")
    }
}
