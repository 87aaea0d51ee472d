import Foundation
import Logging

/// Keeps this process's workers in the registry (``JobStore/recordWorker(_:)``): recorded at
/// start, refreshed every heartbeat interval with the jobs running now (an entry not refreshed
/// for a lease duration shows as `lost`), removed once a graceful stop is done. The elected process also
/// drops entries lost for longer than ``EngineConfiguration/lostWorkerRetention`` (see
/// ``Maintenance``).
final class WorkerRegistration: Sendable {
    private let store: any JobStore
    private let configuration: EngineConfiguration
    private let describe: @Sendable (Date) -> WorkerInfo
    private let bell = Doorbell()
    private let logger: Logger

    /// `describe(now)` says what the worker is and runs at `now`.
    init(store: any JobStore, configuration: EngineConfiguration, logger: Logger, describe: @escaping @Sendable (Date) -> WorkerInfo) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.describe = describe
    }

    /// Refreshes the entry until `stopped()`. (The last refresh keeps it `active` for a lease
    /// duration, longer than the grace period of a stop.)
    func run(stopped: @Sendable () -> Bool) async {
        while !stopped() {
            do {
                try await store.recordWorker(describe(Date()))
            } catch {
                logger.warning("could not update the worker registry", metadata: ["error": "\(error)"])
            }
            await bell.wait(timeout: configuration.heartbeatInterval)
        }
    }

    /// Takes the entry out, once the workers have stopped.
    func remove() async {
        do {
            try await store.removeWorker(id: configuration.workerID)
        } catch {
            logger.warning("could not leave the worker registry; the entry shows as lost", metadata: ["error": "\(error)"])
        }
    }

    /// Ends the current wait (to stop).
    func wake() { bell.ring() }

    /// The entry of an in-process worker at `now`.
    static func info(configuration: EngineConfiguration, queues: [String], kinds: [String], running: Int,
                     startedAt: Date, now: Date) -> WorkerInfo {
        WorkerInfo(
            id: configuration.workerID, name: configuration.workerName,
            host: ProcessInfo.processInfo.hostName, pid: Int(ProcessInfo.processInfo.processIdentifier), version: SpoolVersion.current,
            queues: queues, kinds: kinds, concurrency: queues.reduce(0) { $0 + configuration.queue($1).concurrency },
            running: running, startedAt: startedAt, lastSeenAt: now,
            expiresAt: now.addingTimeInterval(configuration.leaseDuration.seconds))
    }
}
