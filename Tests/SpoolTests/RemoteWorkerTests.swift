import Foundation
import SpoolClient
import SpoolCore
import SpoolDemoJobs
import Testing

@Suite("spool worker --url (a remote worker over HTTP)", .serialized)
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
                let done = try await client.wait(for: id)
                #expect(done.state == .completed && done.attempt == 1)
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

    @Test("spool serve refuses --url; spool worker --url without kinds to run says why")
    func refusals() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let serve = try SpoolProcess(["serve", "--url", "http://127.0.0.1:9"], logTo: dir.file("serve.log"), directory: dir.path)
        #expect(await serve.waitForExit(timeout: .seconds(20)) != 0)
        #expect(serve.output.contains("works a database"))
        let worker = try SpoolProcess(["worker", "--url", "http://127.0.0.1:9", "--token", "t"], logTo: dir.file("worker.log"), directory: dir.path)
        #expect(await worker.waitForExit(timeout: .seconds(20)) != 0)
        #expect(worker.output.contains("--demo-jobs"))
        // Neither fell back to working a database file of its own.
        #expect(!FileManager.default.fileExists(atPath: dir.file("spool.sqlite")))
    }
}
