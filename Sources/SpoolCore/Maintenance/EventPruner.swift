import Foundation
import Logging

/// Deletes job events older than their retention window. A client resuming from before it is
/// told that events were pruned (see ``JobStore/prunedEventSeq()``).
public struct EventPruner: Sendable {
    public struct Settings: Sendable {
        public var retention: Duration
        /// Events deleted per call (at most; a stored row may hold several), and calls per run.
        public var batch = 5000
        public var maxBatches = 100
        public init(retention: Duration) { self.retention = retention }
    }

    let store: any JobStore
    let settings: Settings
    let logger: Logger

    public init(store: any JobStore, settings: Settings, logger: Logger = Logger(label: "spool.pruner")) {
        self.store = store
        self.settings = settings
        self.logger = logger
    }

    /// Deletes what is past the window at `now`. Returns how many rows.
    @discardableResult
    public func run(now: Date = Date()) async throws -> Int {
        let before = now.addingTimeInterval(-settings.retention.seconds)
        return try await PrunePlan.inBatches(of: settings.batch, atMost: settings.maxBatches) { limit in
            try await store.pruneEvents(before: before, limit: limit)
        }
    }
}
