import Foundation
import Logging

/// Runs the cluster-wide duties on the elected process only: the lease rescuer every
/// ``EngineConfiguration/maintenanceInterval``, the job and event pruners and the dropping of
/// long-lost workers from the registry and of old queue statistics every ``EngineConfiguration/pruneInterval``. Started by ``SpoolWorker``; on stop, it resigns.
final class Maintenance: Sendable {
    let elector: LeaderElector
    let rescuer: LeaseRescuer
    let jobPruner: JobPruner
    let eventPruner: EventPruner
    private let configuration: EngineConfiguration
    private let store: any JobStore
    private let bell = Doorbell()
    private let logger: Logger

    init(store: any JobStore, configuration: EngineConfiguration, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        // The claim outlives three rounds: a leader that dies is replaced within that.
        // The holder is this round's own: two workers of one process must not share a claim.
        elector = LeaderElector(store: store, holder: configuration.workerID + ":m" + String(UInt16.random(in: 0...UInt16.max), radix: 36),
                                settings: .init(ttl: configuration.maintenanceInterval * 3), logger: logger)
        rescuer = LeaseRescuer(store: store, logger: logger)
        jobPruner = JobPruner(store: store, settings: .init(configuration), logger: logger)
        eventPruner = EventPruner(store: store, settings: .init(retention: configuration.eventRetention), logger: logger)
    }

    /// Runs rounds until `stopped()` says so (checked after each wake-up), then resigns.
    func run(stopped: @Sendable () -> Bool) async {
        var lastPrune = ContinuousClock.now - configuration.pruneInterval
        while !stopped() {
            if await elector.elect(), !stopped() {
                do {
                    try await rescuer.run()
                    if ContinuousClock.now - lastPrune >= configuration.pruneInterval {
                        lastPrune = ContinuousClock.now
                        try await jobPruner.run()
                        try await eventPruner.run()
                        try await store.pruneWorkers(expiredBefore: Date().addingTimeInterval(-configuration.lostWorkerRetention.seconds))
                        try await store.pruneQueueMinutes(before: QueueMinute.minute(of: Date().addingTimeInterval(-configuration.statsRetention.seconds)))
                    }
                } catch {
                    logger.error("maintenance failed", metadata: ["error": "\(error)"])
                }
            }
            await bell.wait(timeout: configuration.maintenanceInterval)
        }
        await elector.resign()
    }

    /// Ends the current wait (to stop).
    func wake() { bell.ring() }
}
