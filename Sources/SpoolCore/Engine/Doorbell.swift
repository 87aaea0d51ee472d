import Synchronization

/// Wakes sleeping loops. A ring wakes everyone waiting; a ring while nobody waits is kept for
/// the next waiter, so it is never lost.
public final class Doorbell: Sendable {
    private struct State {
        var rung = false
        var nextID = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    /// How many are waiting now (for tests).
    var waitingCount: Int { state.withLock { $0.waiters.count } }

    public func ring() {
        // The table is handed out whole (no copy, no allocation: rings are on the hot path).
        let waiters = state.withLock { s -> [Int: CheckedContinuation<Void, Never>] in
            if s.waiters.isEmpty {
                s.rung = true
                return [:]
            }
            defer { s.waiters = [:] }
            return s.waiters
        }
        for waiter in waiters.values { waiter.resume() }
    }

    /// Returns after a ring (or at once if one is pending), or after `timeout`.
    public func wait(timeout: Duration) async {
        if state.withLock({ s in defer { s.rung = false }; return s.rung }) { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForRing() }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForRing() async {
        let id = state.withLock { s in
            defer { s.nextID += 1 }
            return s.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.rung { s.rung = false; return true }
                    if Task.isCancelled { return true }
                    s.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            // Only this wait's continuation: another waiter keeps waiting.
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
