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

/// One attempt in flight. The first outcome to arrive wins: a handler that finishes after
/// its timeout, its cancellation or a shutdown is ignored (abandoned).
final class RunningJob: Sendable {
    let leased: LeasedJob
    private struct State {
        var outcome: AttemptOutcome?
        var waiter: CheckedContinuation<AttemptOutcome, Never>?
        var handlerTask: Task<Void, Never>?
    }
    private let state = Mutex(State())

    init(_ leased: LeasedJob) { self.leased = leased }

    var id: JobID { leased.job.id }

    /// Sets the outcome if none is set yet; returns whether this call set it. Whatever ends
    /// the attempt other than the handler itself also cancels the handler's task.
    @discardableResult
    func resolve(_ outcome: AttemptOutcome, cancelHandler: Bool = true) -> Bool {
        let (waiter, task, won) = state.withLock { s -> (CheckedContinuation<AttemptOutcome, Never>?, Task<Void, Never>?, Bool) in
            guard s.outcome == nil else { return (nil, nil, false) }
            s.outcome = outcome
            defer { s.waiter = nil }
            return (s.waiter, s.handlerTask, true)
        }
        if won && cancelHandler { task?.cancel() }
        waiter?.resume(returning: outcome)
        return won
    }

    func attach(_ task: Task<Void, Never>) {
        let cancelNow = state.withLock { s -> Bool in
            s.handlerTask = task
            return s.outcome != nil
        }
        if cancelNow { task.cancel() }
    }

    /// Waits for the first outcome.
    func outcome() async -> AttemptOutcome {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { s -> AttemptOutcome? in
                if let o = s.outcome { return o }
                s.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
