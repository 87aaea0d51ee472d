import Foundation
import Hummingbird
import SpoolCore
import Synchronization

/// `GET /v1/workers`: the worker registry. A tenant sees its own remote workers; an admin sees
/// every worker, in-process ones included.
struct WorkerRegistryRoutes {
    let gateway: Gateway

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.get("workers") { _, context in
            let principal = try context.require(.read)
            let now = Date()
            let workers = try await gateway.spool.store.workers(tenant: principal.tenantFilter)
            return try JSONResponse.make(["workers": workers.map { WorkerDocument($0, now: now) }])
        }
    }
}

/// What this gateway last recorded of each remote worker, so that heartbeats can refresh the
/// entry and records are written at most once a second per worker.
final class RemoteWorkers: Sendable {
    private struct Entry {
        var info: WorkerInfo
        var written: ContinuousClock.Instant
    }
    private let entries = Mutex<[String: Entry]>([:])
    private static let limit = 10_000
    private static let minInterval = Duration.seconds(1)

    func forget(_ key: String) { _ = entries.withLock { $0.removeValue(forKey: key) } }
    func knows(_ key: String) -> Bool { entries.withLock { $0[key] != nil } }

    /// Remembers an entry found in the store, as not written yet (the next update writes).
    func seed(_ key: String, _ info: WorkerInfo) {
        entries.withLock { map in
            if map[key] == nil, map.count < Self.limit { map[key] = Entry(info: info, written: .now - .seconds(3600)) }
        }
    }

    /// `info` to record now, or `nil` when this worker was recorded less than a second ago.
    /// Keeps the running count a heartbeat reported, and the first start time.
    func update(_ key: String, _ make: (WorkerInfo?) -> WorkerInfo?) -> WorkerInfo? {
        let now = ContinuousClock.now
        return entries.withLock { map in
            let old = map[key]
            guard var info = make(old?.info) else { return nil }
            if let old {
                info.startedAt = old.info.startedAt
                if now - old.written < Self.minInterval && old.info.queues == info.queues && old.info.kinds == info.kinds {
                    map[key]?.info = info
                    return nil
                }
            } else if map.count >= Self.limit {
                map.removeAll()  // a flood of ids: start over rather than grow
            }
            map[key] = Entry(info: info, written: now)
            return info
        }
    }
}
