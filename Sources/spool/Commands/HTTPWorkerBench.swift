import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import SpoolCore
import SpoolGateway

/// The worker-protocol part of `spool bench`: a real gateway on a loopback port and remote
/// workers speaking `/v1/worker/...` over HTTP, leasing and completing in batches.
struct HTTPWorkerBench {
    let spool: Spool
    let workers: Int
    let producers: Int
    let batch: Int

    /// A lease answer, as much of it as the bench reads.
    private struct Leased: Decodable {
        struct Job: Decodable { var id: String; var lease_token: String }
        var jobs: [Job]
    }

    /// Runs `body` with a gateway (no workers inside it) serving the spool on a loopback port.
    func withGateway<T: Sendable>(_ body: (String) async throws -> T) async throws -> T {
        let gateway = try await BenchGateway.start(spool, workers: false)
        do {
            let result = try await body("http://127.0.0.1:\(gateway.port)")
            await gateway.stop()
            return result
        } catch {
            await gateway.stop()
            throw error
        }
    }

    /// Producers enqueue `count` jobs (in the process) while `workers` remote workers run them
    /// over HTTP; jobs/s from the first enqueue to the last completion.
    func endToEnd(count: Int) async throws -> Double {
        try await withGateway { url in
            let done = Counter()
            let finished = Locked<ContinuousClock.Instant?>(nil)
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { _ = try await Bench.timeEnqueues(spool, count: count, callers: producers, kind: "bench.remote") }
                for n in 0..<workers {
                    group.addTask {
                        while done.current < count {
                            let jobs = try await lease(url, worker: "bench-\(n)", max: batch, wait: 0.5)
                            if jobs.isEmpty { continue }
                            try await complete(url, jobs)
                            done.add(jobs.count)
                            // The last completion ends the run, not the polls still waiting after it.
                            if done.current >= count { finished.withLock { if $0 == nil { $0 = .now } } }
                        }
                    }
                }
                try await group.waitForAll()
            }
            return Double(count) / ((finished.withLock { $0 } ?? .now) - start).seconds
        }
    }

    /// One remote worker long-polls; jobs are enqueued one at a time. Returns the times from the
    /// enqueue call to the lease answer arriving, in ms.
    func pickupLatency(samples: Int) async throws -> [Double] {
        try await withGateway { url in
            _ = try await lease(url, worker: "bench-poll", max: 1, wait: 0)  // names the kind
            var latencies: [Double] = []
            for _ in 0..<samples {
                async let leased = lease(url, worker: "bench-poll", max: 1, wait: 10)
                try await Task.sleep(for: .milliseconds(3))  // the poll is waiting by now
                let t0 = ContinuousClock.now
                try await spool.enqueue(NewJob(queue: "bench", kind: "bench.remote"))
                let jobs = try await leased
                let t1 = ContinuousClock.now
                guard !jobs.isEmpty else { throw CLIError("a long poll did not get its job within 10 s") }
                try await complete(url, jobs)
                latencies.append((t1 - t0).seconds * 1000)
            }
            return latencies
        }
    }

    private func lease(_ url: String, worker: String, max: Int, wait: Double) async throws -> [Leased.Job] {
        let body = #"{"worker_id":"\#(worker)","queues":["bench"],"kinds":["bench.remote"],"max_jobs":\#(max),"wait_seconds":\#(wait)}"#
        return try JSON.decode(Leased.self, from: try await post(url + "/v1/worker/lease", Data(body.utf8))).jobs
    }

    private func complete(_ url: String, _ jobs: [Leased.Job]) async throws {
        let items = jobs.map { #"{"job_id":"\#($0.id)","lease_token":"\#($0.lease_token)"}"# }.joined(separator: ",")
        _ = try await post(url + "/v1/worker/complete", Data(#"{"jobs":[\#(items)]}"#.utf8))
    }

    private func post(_ url: String, _ body: Data) async throws -> Data {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let data = Data(buffer: try await response.body.collect(upTo: 16 << 20))
        guard response.status.code == 200 else {
            throw CLIError("\(url) answered \(response.status.code): \(String(decoding: data.prefix(300), as: UTF8.self))")
        }
        return data
    }
}

/// A gateway on an ephemeral loopback port serving a bench's spool, with its workers or not.
struct BenchGateway {
    let port: Int
    let group: ServiceGroup
    let task: Task<Void, any Error>

    static func start(_ spool: Spool, workers: Bool) async throws -> BenchGateway {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        var config = GatewayConfiguration()
        config.port = 0
        let gateway = Gateway(spool: spool, configuration: config, metrics: metricsRegistry)
        let (ports, portFeed) = AsyncStream.makeStream(of: Int.self)
        let app = try gateway.application(logger: logger) { portFeed.yield($0) }
        let services: [any Service] = workers ? [app, spool.worker(queues: ["bench"])] : [app]
        let group = ServiceGroup(services: services, logger: logger)
        let task = Task { try await group.run() }
        var portIterator = ports.makeAsyncIterator()
        guard let port = await portIterator.next() else {
            task.cancel()
            throw CLIError("the gateway did not start")
        }
        return BenchGateway(port: port, group: group, task: task)
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}
