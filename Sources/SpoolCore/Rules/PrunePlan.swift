import Foundation

/// Which finished jobs a prune deletes, kept by every store: `completed` and `cancelled` jobs
/// finished before `completedBefore`, `failed` ones (the dead letters) before `failedBefore`;
/// `nil` keeps that kind. Webhook delivery records go with the oldest history kept.
public struct PrunePlan: Sendable, Hashable {
    public var completedBefore: Date?
    public var failedBefore: Date?

    public init(completedBefore: Date?, failedBefore: Date?) {
        self.completedBefore = completedBefore
        self.failedBefore = failedBefore
    }

    /// Each state to prune with its cut-off, in the order the store deletes them.
    public var steps: [(state: JobState, before: Date)] {
        [(JobState.completed, completedBefore), (.cancelled, completedBefore), (.failed, failedBefore)]
            .compactMap { state, cutoff in cutoff.map { (state, $0) } }
    }

    /// Delivery records older than this go too (`nil`: none).
    public var deliveriesBefore: Date? { [completedBefore, failedBefore].compactMap { $0 }.min() }
}

extension PrunePlan {
    /// Calls `delete` (one store call that deletes at most `batch` rows and says how many) until
    /// a call deletes fewer than `batch` or `maxBatches` calls have run: a short transaction
    /// each, so pruning a large backlog never holds the store for long. Returns the total.
    public static func inBatches(of batch: Int, atMost maxBatches: Int,
                                 _ delete: (_ limit: Int) async throws -> Int) async throws -> Int {
        var deleted = 0
        for _ in 0..<maxBatches {
            let n = try await delete(batch)
            deleted += n
            if n < batch { break }
        }
        return deleted
    }
}
