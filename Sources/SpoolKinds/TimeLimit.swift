import SpoolCore

/// Runs `work`, racing it against `limit`: past the limit `work` is cancelled (and awaited:
/// a command's teardown, a request's cancellation) and ``AttemptTimedOut`` is thrown with
/// `message`. Both kinds bound their attempt this way, besides the job's own timeout.
func withTimeLimit<T: Sendable>(_ limit: Duration, _ message: String,
                                _ work: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await work() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let done = first else { throw AttemptTimedOut(message) }
        return done
    }
}
