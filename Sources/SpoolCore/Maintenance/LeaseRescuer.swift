import Logging

/// Returns to their queue the jobs whose worker stopped heartbeating (``LeaseRescue`` says how),
/// in calls of at most ``LeaseRescue/batchLimit`` jobs.
public struct LeaseRescuer: Sendable {
    public struct Settings: Sendable {
        /// The most calls per run (a run rescues at most `maxBatches × LeaseRescue.batchLimit`).
        public var maxBatches = 100
        public init() {}
    }

    let store: any JobStore
    let settings: Settings
    let logger: Logger

    public init(store: any JobStore, settings: Settings = Settings(), logger: Logger = Logger(label: "spool.rescuer")) {
        self.store = store
        self.settings = settings
        self.logger = logger
    }

    /// Rescues what has expired now. Returns how many jobs.
    @discardableResult
    public func run() async throws -> Int {
        var rescued = 0
        for _ in 0..<settings.maxBatches {
            let n = try await store.rescueExpiredLeases()
            rescued += n
            if n < LeaseRescue.batchLimit { break }
        }
        if rescued > 0 { logger.warning("rescued jobs whose lease expired", metadata: ["count": "\(rescued)"]) }
        return rescued
    }
}
