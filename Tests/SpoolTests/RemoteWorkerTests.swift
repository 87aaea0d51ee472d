import Foundation
import SpoolClient
import SpoolCore
import SpoolDemoJobs
import Testing

@Suite("spool worker --url (a remote worker over HTTP)", .serialized, .timeLimit(.minutes(3)))
struct RemoteWorkerTests {
    @Test("spool worker --url runs jobs over HTTP, shows in the registry, reports progress, and gives a running job back on SIGTERM")
    func remoteWorkerProcess() async throws {
        try await TestGateway.with(workers: false) { gw in
            let url = "http://127.0.0.1:\(gw.port)"
            let worker = try SpoolProcess(["worker", "--url", url, "--demo-jobs", "--concurrency", "4", "--grace-seconds", "0.5"],
                                          logTo: gw.dir.file("remote.log"))
            let client = SpoolClient(url: url)
            #expect(try await eventually(timeout: .seconds(30)) {
                (try? await client.workers())?.contains { $0.name == "spool worker --url" && $0.state == "active" } == true
            }, "the remote worker did not register; log:\n\(worker.output)")
            var quick: [JobID] = []
            for _ in 0..<20 {
                quick.append(JobID(try await client.enqueue(NewJob(kind: DemoNoop.kind)).id)!)
            }
            let long = JobID(try await client.enqueue(try NewJob(kind: DemoSleep.kind, payload: DemoSleep.Payload(seconds: 60, steps: 120))).id)!
            for id in quick {
                #expect(await eventually(timeout: .seconds(60)) { (try? await client.job(id).state) == .completed })
                #expect(try await client.job(id).attempt == 1)
            }
            // Progress goes over HTTP too.
            #expect(try await eventually(timeout: .seconds(20)) { (try await client.job(long).progress?.percent ?? 0) > 0 },
                    "no progress from the remote worker; log:\n\(worker.output)")
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit(timeout: .seconds(20)) == 0, "no clean exit; log:\n\(worker.output)")
            let givenBack = try await client.job(long)
            #expect(givenBack.state == .pending && givenBack.attempt == 0, "\(givenBack.state) attempt \(givenBack.attempt)")
            // It left the registry rather than showing as lost.
            #expect(try await !client.workers().contains { $0.name == "spool worker --url" })
        }
    }

    @Test("RemoteWorker: results past the gateway's body limit go in smaller requests; an attempt past its deadline fails as timed out")
    func remoteWorkerReportsAndDeadlines() async throws {
        try await TestGateway.with(workers: false) { gw in
            let client = SpoolClient(url: "http://127.0.0.1:\(gw.port)")
            let big = AnyJobHandler(kind: "rw.big") { _, _ in Data(("\"" + String(repeating: "x", count: 100_000) + "\"").utf8) }
            let slow = AnyJobHandler(kind: "rw.slow") { _, _ in
                try await Task.sleep(for: .seconds(60))
                return nil
            }
            let worker = RemoteWorker(client: client, handlers: [big, slow],
                                      settings: .init(concurrency: 30, wait: .seconds(1), gracePeriod: .seconds(1)))
            let running = Task { try await worker.run() }
            #expect(try await eventually(timeout: .seconds(20)) { try await client.workers().count == 1 })
            // 20 results of 100 KB: 2 MB in all, past the 1 MiB body limit of one request.
            var ids: [JobID] = []
            for _ in 0..<20 { ids.append(JobID(try await client.enqueue(NewJob(kind: "rw.big")).id)!) }
            let slowID = JobID(try await client.enqueue(NewJob(kind: "rw.slow", maxAttempts: 1, timeout: .seconds(1))).id)!
            // (Polled with a bound, not waited for: a lost report must fail the test, not hang it.)
            for id in ids {
                #expect(await eventually(timeout: .seconds(60)) { (try? await client.job(id).state) == .completed })
                #expect(try await client.job(id).attempt == 1)
            }
            #expect(await eventually(timeout: .seconds(30)) { (try? await client.job(slowID).state) == .failed })
            #expect(try await client.job(slowID).errors.first?.reason == "timeout")
            worker.stop()
            try await running.value
        }
    }

    @Test("spool serve refuses --url and SPOOL_URL; spool worker --url without kinds to run says why")
    func refusals() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        // serve does not offer --url at all; SPOOL_URL in its environment is not taken for a database.
        let flag = try SpoolProcess(["serve", "--url", "http://127.0.0.1:9"], logTo: dir.file("flag.log"), directory: dir.path)
        #expect(await flag.waitForExit(timeout: .seconds(20)) == 64)
        #expect(flag.output.contains("Unknown option '--url'"), "\(flag.output)")
        let serve = try SpoolProcess(["serve"], logTo: dir.file("serve.log"), environment: ["SPOOL_URL": "http://127.0.0.1:9"], directory: dir.path)
        #expect(await serve.waitForExit(timeout: .seconds(20)) != 0)
        #expect(serve.output.contains("works a database"), "\(serve.output)")
        let worker = try SpoolProcess(["worker", "--url", "http://127.0.0.1:9", "--token", "t"], logTo: dir.file("worker.log"), directory: dir.path)
        #expect(await worker.waitForExit(timeout: .seconds(20)) != 0)
        #expect(worker.output.contains("--demo-jobs"))
        // Neither fell back to working a database file of its own.
        #expect(!FileManager.default.fileExists(atPath: dir.file("spool.sqlite")))
    }
}
