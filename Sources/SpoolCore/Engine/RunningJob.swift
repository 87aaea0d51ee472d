import Foundation
import Synchronization

/// How one attempt ended, as far as the worker is concerned.
enum AttemptOutcome: Sendable {
    case succeeded(Data?)
    case failed(any Error)
    case timedOut(Duration)
    /// The job was cancelled: the store already says so, there is nothing to report.
    case cancelled
    /// Another worker owns the job now: reporting would be rejected anyway.
    case leaseLost
    /// The process is shutting down: give the job back.
    case shutdown
}

/// One attempt in flight. The first outcome wins and is the only one reported: a handler
/// that finishes after its timeout, its cancellation or a shutdown is ignored (abandoned).
final class RunningJob: Sendable {
    let leased: LeasedJob
    /// When the attempt times out.
    let deadline: ContinuousClock.Instant
    private struct State {
        var resolved = false
        var handlerTask: Task<Void, Never>?
    }
    private let state = Mutex(State())

    init(_ leased: LeasedJob) {
        self.leased = leased
        self.deadline = ContinuousClock.now + leased.job.timeout
    }

    var id: JobID { leased.job.id }
    var isResolved: Bool { state.withLock { $0.resolved } }

    /// Claims the right to report an outcome; only the first caller gets `true`.
    func resolve() -> Bool {
        state.withLock { s in
            if s.resolved { return false }
            s.resolved = true
            return true
        }
    }

    func attach(_ task: Task<Void, Never>) {
        let stopped = state.withLock { s in
            s.handlerTask = task
            return s.resolved
        }
        // Stopped (timeout, cancel) before the task was attached: cancel it now.
        if stopped { task.cancel() }
    }

    /// Asks the handler to stop (it may not listen).
    func cancelHandler() {
        state.withLock { $0.handlerTask }?.cancel()
    }
}
