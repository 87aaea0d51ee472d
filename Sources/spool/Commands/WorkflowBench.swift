import Foundation
import Logging
import SpoolCore
import SpoolSQLite

/// The workflow figures of `spool bench`: a fan-in of many parents into one child, a fan-out of
/// one parent to many children and of one event to many subscribers, each timed on an empty
/// table and with `history` finished jobs in it (the cost must follow the number of dependants,
/// not the size of the table).
struct WorkflowBench {
    var fanIn = 10_000
    var fanOut = 100
    var samples = 20
    var concurrency: Int

    /// What one table size gave.
    struct Figures {
        var childEnqueueMs: Double
        var parentsPerSecond: Double
        var releaseMs: Double
        var fanOutCompleteMs: [Double]
        var publishMs: [Double]
    }

    func run(path: String, level: SQLiteJobStore.Durability, history: Int) async throws -> Figures {
        let store = try SQLiteJobStore(path: path, durability: level)
        try await store.migrate()
        var config = Bench.engineConfiguration(concurrency: concurrency)
        config.subscriptions = (0..<fanOut).map {
            TopicSubscription(tenant: nil, topic: "bench.topic", name: "s\($0)", queue: "fanout", kind: "bench.noop")
        }
        let spool = Spool(store: store, configuration: config, logger: Logger(label: "bench"))
        spool.register(AnyJobHandler(kind: "bench.noop") { _, _ in nil })
        if history > 0 { try await store.seedFinishedJobs(count: history, queue: "bench", kind: "bench.noop") }

        // Fan-in: 10,000 parents, then one child naming them all; workers run the parents.
        var parents: [JobID] = []
        for _ in stride(from: 0, to: fanIn, by: 1000) {
            parents += try await spool.enqueue(Array(repeating: NewJob(queue: "fanin", kind: "bench.noop"), count: min(1000, fanIn - parents.count)))
                .map(\.job.id)
        }
        var child = NewJob(queue: "fanin-child", kind: "bench.noop")
        child.dependsOn = parents.map { .job($0) }
        var t0 = ContinuousClock.now
        let childID = try await spool.enqueue(child).job.id
        let childEnqueueMs = (ContinuousClock.now - t0).seconds * 1000
        let worker = spool.worker(queues: ["fanin", "fanin-child"])
        let running = Task { try await worker.run() }
        t0 = ContinuousClock.now
        var released: Job?
        for _ in 0..<60_000 {
            if let job = try await store.job(childID, tenant: nil), job.state == .completed { released = job; break }
            try await Task.sleep(for: .milliseconds(10))
        }
        guard let released, let childStart = released.startedAt else { throw CLIError("the fan-in child did not run within 10 minutes") }
        let elapsed = (ContinuousClock.now - t0).seconds
        var lastParent = Date.distantPast
        for id in parents.suffix(200) { if let at = try await store.job(id, tenant: nil)?.finishedAt { lastParent = max(lastParent, at) } }
        let releaseMs = max(0, childStart.timeIntervalSince(lastParent) * 1000)
        worker.stop()
        try await running.value

        // Fan-out by dependencies: completing one parent releases its 100 children.
        var fanOutMs: [Double] = []
        for _ in 0..<samples {
            var request = [NewJob(queue: "fanout-parent", kind: "bench.noop")]
            for _ in 0..<fanOut {
                var job = NewJob(queue: "fanout-children", kind: "bench.noop")
                job.dependsOn = [.request(0)]
                request.append(job)
            }
            let ids = try await spool.enqueue(request).map(\.job.id)
            guard let leased = try await store.lease(queue: "fanout-parent", limit: 1, workerID: "bench", leaseDuration: .seconds(30)).jobs.first,
                  leased.id == ids[0] else { throw CLIError("the fan-out parent was not leased") }
            let start = ContinuousClock.now
            try await store.complete(leased.id, lease: leased.lease, result: nil)
            fanOutMs.append((ContinuousClock.now - start).seconds * 1000)
            guard try await store.job(ids[fanOut], tenant: nil)?.state == .pending else { throw CLIError("a fan-out child was not released") }
            _ = try await store.purge(queue: "fanout-children", tenant: nil)
        }

        // Fan-out by a topic: one publish writes the event and 100 jobs.
        var publishMs: [Double] = []
        for _ in 0..<samples {
            let start = ContinuousClock.now
            let result = try await spool.publish(topic: "bench.topic", payload: Data("{}".utf8))
            publishMs.append((ContinuousClock.now - start).seconds * 1000)
            guard result.event.jobIDs.count == fanOut else { throw CLIError("a publish made \(result.event.jobIDs.count) jobs, not \(fanOut)") }
        }
        try await store.close()
        return Figures(childEnqueueMs: childEnqueueMs, parentsPerSecond: Double(fanIn) / elapsed, releaseMs: releaseMs,
                       fanOutCompleteMs: fanOutMs, publishMs: publishMs)
    }
}
