import Foundation
import Logging

/// Deletes finished jobs past their retention: `completed` after ``Settings/completedRetention``,
/// `failed` (the dead letters) after ``Settings/failedRetention``; `nil` keeps them for good.
/// Cancelled jobs go with completed ones (``PrunePlan``).
public struct JobPruner: Sendable {
    public struct Settings: Sendable {
        public var completedRetention: Duration?
        public var failedRetention: Duration?
        /// Jobs deleted per call, and the most calls per run.
        public var batch = 1000
        public var maxBatches = 100
        public init(completedRetention: Duration?, failedRetention: Duration?) {
            self.completedRetention = completedRetention
            self.failedRetention = failedRetention
        }
        public init(_ engine: EngineConfiguration) {
            self.init(completedRetention: engine.completedRetention, failedRetention: engine.failedRetention)
        }
    }

    let store: any JobStore
    let settings: Settings
    let logger: Logger

    public init(store: any JobStore, settings: Settings, logger: Logger = Logger(label: "spool.pruner")) {
        self.store = store
        self.settings = settings
        self.logger = logger
    }

    /// Deletes what is past its retention at `now`. Returns how many jobs.
    @discardableResult
    public func run(now: Date = Date()) async throws -> Int {
        let completedBefore = settings.completedRetention.map { now.addingTimeInterval(-$0.seconds) }
        let failedBefore = settings.failedRetention.map { now.addingTimeInterval(-$0.seconds) }
        if completedBefore == nil && failedBefore == nil { return 0 }
        let pruned = try await PrunePlan.inBatches(of: settings.batch, atMost: settings.maxBatches) { limit in
            try await store.prune(completedBefore: completedBefore, failedBefore: failedBefore, limit: limit)
        }
        if pruned > 0 { logger.info("pruned finished jobs", metadata: ["count": "\(pruned)"]) }
        return pruned
    }
}
