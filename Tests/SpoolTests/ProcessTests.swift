import Foundation
import SpoolCore
import SpoolDemoJobs
import SpoolSQLite
import Testing

/// The `spool` binary built next to the test bundle.
func spoolBinary() throws -> String {
    if let path = ProcessInfo.processInfo.environment["SPOOL_BINARY"] { return path }
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [dir, dir.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("spool").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    throw CLIMissing(searched: dir.path)
}

struct CLIMissing: Error, CustomStringConvertible {
    var searched: String
    var description: String { "the spool binary was not found next to \(searched); build it or set SPOOL_BINARY" }
}

/// A `spool` child process, killed when the test is done with it.
final class SpoolProcess {
    let process = Process()
    let log: String

    init(_ arguments: [String], logTo log: String, environment: [String: String] = [:], directory: String? = nil) throws {
        self.log = log
        process.executableURL = URL(fileURLWithPath: try spoolBinary())
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        var env = ProcessInfo.processInfo.environment
        env["SPOOL_LOG_LEVEL"] = "info"
        env.merge(environment) { $1 }
        process.environment = env
        try process.run()
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Waits up to `timeout` for the process to exit; returns its status, or nil if it did not.
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return process.isRunning ? nil : process.terminationStatus
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
}

@Suite("Real spool processes", .serialized)
struct ProcessTests {
    @Test("a worker killed with SIGKILL mid-job loses nothing: its jobs are rescued and complete")
    func crashedWorkerLosesNothing() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let db = dir.file("crash.sqlite")
        let store = try SQLiteJobStore(path: db)
        try await store.migrate()
        let spool = Spool(store: store)
        var ids: [JobID] = []
        for _ in 0..<8 {
            ids.append(try await spool.enqueue(DemoSleep.self, DemoSleep.Payload(seconds: 1.5, steps: 3)).id)
        }
        let workerArgs = ["worker", "--database", db, "--concurrency", "4", "--lease-seconds", "1.5", "--heartbeat-seconds", "0.3", "--grace-seconds", "5"]
        let first = try SpoolProcess(workerArgs, logTo: dir.file("worker1.log"))
        let running = try await eventually(timeout: .seconds(30)) {
            try await store.list(JobFilter(state: .processing, limit: 100)).jobs.count == 4
        }
        #expect(running, "worker 1 never ran 4 jobs; log:\n\(first.output)")
        first.signal(SIGKILL)
        #expect(await first.waitForExit(timeout: .seconds(10)) != nil)
        let orphaned = try await store.list(JobFilter(state: .processing, limit: 100)).jobs.map(\.id)
        #expect(orphaned.count == 4)

        let second = try SpoolProcess(workerArgs, logTo: dir.file("worker2.log"))
        let allDone = try await eventually(timeout: .seconds(60)) {
            try await ids.asyncAllSatisfy { try await store.job($0, tenant: nil)?.state == .completed }
        }
        #expect(allDone, "not every job completed; worker 2 log:\n\(second.output)")
        for id in orphaned {
            let job = try #require(try await store.job(id, tenant: nil))
            #expect(job.state == .completed && job.attempt == 2)
            #expect(job.errors.map(\.reason) == ["lease_expired"])
        }
        let stats = try #require(try await store.queueStats(tenant: nil).first { $0.name == "default" })
        #expect(stats.counts[.completed] == 8 && stats.depth == 0 && (stats.counts[.failed] ?? 0) == 0)

        second.signal(SIGTERM)
        #expect(await second.waitForExit(timeout: .seconds(15)) == 0)
        try await store.close()
    }

    @Test("a worker killed with SIGKILL in the middle of a DAG: every job still runs, in order, and the DAG finishes")
    func crashedWorkerMidDAG() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let db = dir.file("dag.sqlite")
        let store = try SQLiteJobStore(path: db)
        try await store.migrate()
        let spool = Spool(store: store)
        func sleep(_ seconds: Double, after parents: [ParentReference]) throws -> NewJob {
            var job = try NewJob(kind: DemoSleep.kind, payload: DemoSleep.Payload(seconds: seconds, steps: 2))
            job.dependsOn = parents
            return job
        }
        // Two parents, a child of both, a grandchild.
        let ids = try await spool.enqueue([
            try sleep(2, after: []), try sleep(2, after: []), try sleep(0.3, after: [.request(0), .request(1)]), try sleep(0.3, after: [.request(2)]),
        ]).map(\.job.id)
        let workerArgs = ["worker", "--database", db, "--concurrency", "4", "--lease-seconds", "1.5", "--heartbeat-seconds", "0.3", "--grace-seconds", "5"]
        let first = try SpoolProcess(workerArgs, logTo: dir.file("worker1.log"))
        let running = try await eventually(timeout: .seconds(30)) {
            try await store.list(JobFilter(state: .processing, limit: 10)).jobs.count == 2
        }
        #expect(running, "worker 1 never ran the parents; log:\n\(first.output)")
        first.signal(SIGKILL)
        #expect(await first.waitForExit(timeout: .seconds(10)) != nil)
        #expect(try await store.mustGet(ids[2]).state == .waiting)

        let second = try SpoolProcess(workerArgs, logTo: dir.file("worker2.log"))
        let finished = try await eventually(timeout: .seconds(60)) {
            try await ids.asyncAllSatisfy { try await store.job($0, tenant: nil)?.state == .completed }
        }
        #expect(finished, "the DAG did not finish; worker 2 log:\n\(second.output)")
        let jobs = try await ids.asyncMap { try await store.mustGet($0) }
        #expect(jobs[0].attempt == 2 && jobs[1].attempt == 2 && jobs[2].attempt == 1 && jobs[3].attempt == 1)
        let parentsDone = try #require(jobs[0...1].compactMap(\.finishedAt).max())
        #expect(try #require(jobs[2].startedAt) >= parentsDone && jobs[3].startedAt! >= jobs[2].finishedAt!)
        second.signal(SIGTERM)
        #expect(await second.waitForExit(timeout: .seconds(15)) == 0)
        try await store.close()
    }

    @Test("SIGTERM stops a worker gracefully and gives a running job back at once")
    func sigtermGivesJobsBack() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let db = dir.file("term.sqlite")
        let store = try SQLiteJobStore(path: db)
        try await store.migrate()
        let spool = Spool(store: store)
        let long = try await spool.enqueue(DemoSleep.self, DemoSleep.Payload(seconds: 60, steps: 60))
        let worker = try SpoolProcess(["worker", "--database", db, "--grace-seconds", "0.5"], logTo: dir.file("worker.log"))
        #expect(try await eventually(timeout: .seconds(30)) { try await store.job(long.id, tenant: nil)?.state == .processing })
        worker.signal(SIGTERM)
        let status = await worker.waitForExit(timeout: .seconds(10))
        #expect(status == 0, "worker did not exit cleanly; log:\n\(worker.output)")
        let job = try #require(try await store.job(long.id, tenant: nil))
        #expect(job.state == .pending && job.attempt == 0 && job.leaseExpiresAt == nil)
        try await store.close()
    }

    @Test("the CLI enqueues, lists, pauses and reports errors with a non-zero exit")
    func cliRoundTrip() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let db = dir.file("cli.sqlite")
        try "queues:\n  mail: {}\n".write(toFile: dir.file("spool.yaml"), atomically: true, encoding: .utf8)
        func run(_ args: [String]) async throws -> (Int32, String) {
            let p = try SpoolProcess(args + ["--database", db, "--config", dir.file("spool.yaml")], logTo: dir.file("cli-\(UUID().uuidString).log"))
            let status = await p.waitForExit(timeout: .seconds(30))
            return (status ?? -1, p.output)
        }
        let (s1, out1) = try await run(["enqueue", "--queue", "mail", "--kind", "demo.noop", "--priority", "3"])
        #expect(s1 == 0, "\(out1)")
        let doc = try JSONDecoder().decode(JobDocument.self, from: Data(out1.utf8))
        #expect(doc.state == .pending && doc.queue == "mail" && doc.priority == 3)
        let (s2, out2) = try await run(["get", doc.id])
        #expect(s2 == 0 && out2.contains(doc.id))
        let (s3, _) = try await run(["pause", "mail"])
        #expect(s3 == 0)
        let (s4, out4) = try await run(["queues", "--json"])
        #expect(s4 == 0 && out4.contains("\"paused\" : true"))
        let (s5, out5) = try await run(["enqueue", "--kind", "demo.noop", "--payload", "{oops"])
        #expect(s5 != 0 && out5.contains("payload"))
        let (s6, out6) = try await run(["get", "not-an-id"])
        #expect(s6 != 0 && out6.contains("not a job id"))
        let (s7, out7) = try await run(["retry", doc.id])
        #expect(s7 != 0 && out7.contains("cannot retry"))
    }
}

@Suite("A newcomer's first hour, through the real binary", .serialized)
struct FirstHourTests {
    @Test("spool --version; token new --json; a port in use is said before any worker starts; serve logs how many tokens it loaded, never them")
    func cliBasics() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        func run(_ args: [String], environment: [String: String] = [:]) async throws -> (Int32, String) {
            let p = try SpoolProcess(args, logTo: dir.file("cli-\(UUID().uuidString).log"), environment: environment, directory: dir.path)
            let status = await p.waitForExit(timeout: .seconds(30))
            return (status ?? -1, p.output)
        }
        let (v, version) = try await run(["--version"])
        #expect(v == 0 && version.trimmingCharacters(in: .whitespacesAndNewlines) == SpoolVersion.current)

        let (t, tokenJSON) = try await run(["token", "new", "--json", "--tenant", "acme", "--scopes", "enqueue,read"])
        #expect(t == 0, "\(tokenJSON)")
        struct Made: Decodable { var token: String; var tenant: String; var scopes: [String]; var sha256: String }
        let made = try JSONDecoder().decode(Made.self, from: Data(tokenJSON.utf8))
        #expect(made.tenant == "acme" && made.scopes == ["enqueue", "read"] && made.sha256.count == 64 && made.token.hasPrefix("spool_"))

        // A port another process listens on.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(bound == 0 && listen(listener, 1) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let (p, refused) = try await run(["serve", "--database", dir.file("a.sqlite"), "--port", "\(port)"])
        #expect(p != 0)
        #expect(refused.contains("port \(port) on 127.0.0.1 is already in use") && refused.contains("--port"), "\(refused)")
        #expect(!refused.contains("errno") && !refused.contains("worker started"), "\(refused)")

        // Tokens loaded: counted in the log, never shown.
        let secret = "first-hour-secret-\(UUID().uuidString)"
        let server = try SpoolProcess(["serve", "--database", dir.file("b.sqlite"), "--port", "0", "--demo-jobs"], logTo: dir.file("serve.log"),
                                      environment: ["SPOOL_TOKENS": "\(secret):acme:enqueue+read,other-\(secret):globex:admin"], directory: dir.path)
        #expect(try await eventually(timeout: .seconds(30)) { server.output.contains("HTTP API listening") }, "\(server.output)")
        #expect(server.output.contains("API tokens loaded") && server.output.contains("count=2"), "\(server.output)")
        #expect(!server.output.contains(secret))

        // A tenant other than the token's is refused, not quietly replaced by the token's.
        let listening = try #require(server.output.range(of: #"http://127\.0\.0\.1:\d+"#, options: .regularExpression))
        let url = String(server.output[listening])
        let (wrong, refusal) = try await run(["enqueue", "--url", url, "--token", secret, "--tenant", "globex", "--kind", "demo.noop"])
        #expect(wrong != 0 && refusal.contains("403") && refusal.contains("acts for tenant 'acme'"), "\(refusal)")
        let (right, accepted) = try await run(["enqueue", "--url", url, "--token", secret, "--tenant", "acme", "--kind", "demo.noop"])
        #expect(right == 0 && accepted.contains("\"tenant\" : \"acme\""), "\(accepted)")
        server.signal(SIGTERM)
        _ = await server.waitForExit(timeout: .seconds(15))
    }
}

extension FirstHourTests {
    @Test("tables show every header and value whole; webhook delivery jobs stay out of spool list unless asked for")
    func tablesAndInternalJobs() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let db = dir.file("tables.sqlite")
        let queue = "a-rather-long-queue-name-for-tables"
        try "queues:\n  \(queue): {}\n".write(toFile: dir.file("spool.yaml"), atomically: true, encoding: .utf8)
        func run(_ args: [String]) async throws -> (Int32, String) {
            let p = try SpoolProcess(args + ["--database", db], logTo: dir.file("cli-\(UUID().uuidString).log"), directory: dir.path)
            let status = await p.waitForExit(timeout: .seconds(30))
            return (status ?? -1, p.output)
        }
        let (e, enqueued) = try await run(["enqueue", "--queue", queue, "--kind", "demo.noop", "--callback-url", "https://example.com/hook"])
        #expect(e == 0, "\(enqueued)")
        let id = try JSONDecoder().decode(JobDocument.self, from: Data(enqueued.utf8)).id
        let (c, cancelled) = try await run(["cancel", id])  // its webhook delivery job is made now
        #expect(c == 0, "\(cancelled)")
        let (_, queues) = try await run(["queues"])
        #expect(queues.contains("OLDEST PENDING") && queues.contains(queue), "\(queues)")
        let (_, list) = try await run(["list"])
        #expect(list.contains(queue) && list.contains(id) && !list.contains("spool.webhook"), "\(list)")
        let (_, all) = try await run(["list", "--internal"])
        #expect(all.contains("spool.webhook"), "\(all)")
        let (_, asked) = try await run(["list", "--queue", "spool.webhooks", "--json"])
        #expect(asked.contains("\"spool.webhook\""), "\(asked)")
    }
}

@Suite("spool watch and enqueue --wait", .serialized)
struct WatchTests {
    @Test("enqueue --wait follows a job over SSE to its result; a failing job exits non-zero; watch works on a database file")
    func followsJobs() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let db = dir.file("watch.sqlite")
        let server = try SpoolProcess(["serve", "--database", db, "--port", "0"], logTo: dir.file("serve.log"))
        var port: Int?
        _ = try await eventually(timeout: .seconds(30)) {
            if let range = server.output.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(server.output[range].split(separator: ":").last ?? "")
            }
            return port != nil
        }
        let url = "http://127.0.0.1:\(try #require(port, "serve did not start: \(server.output)"))"
        func run(_ args: [String]) async throws -> (Int32, String) {
            let p = try SpoolProcess(args, logTo: dir.file("cli-\(UUID().uuidString).log"))
            let status = await p.waitForExit(timeout: .seconds(60))
            return (status ?? -1, p.output)
        }
        let (ok, okOut) = try await run(["enqueue", "--url", url, "--kind", "demo.sleep", "--payload", #"{"seconds": 0.6, "steps": 3}"#, "--wait"])
        #expect(ok == 0, "\(okOut)")
        #expect(okOut.contains("slept_seconds"), "\(okOut)")
        #expect(okOut.contains("100.0%") && okOut.contains("processing") && okOut.contains("step"), "no progress shown: \(okOut)")

        let (bad, badOut) = try await run(["enqueue", "--url", url, "--kind", "demo.flaky", "--payload", #"{"always": true}"#, "--max-attempts", "1", "--wait"])
        #expect(bad == 1, "\(badOut)")
        #expect(badOut.contains("failed after 1 attempt"), "\(badOut)")

        // The finished job, watched straight from the database file.
        let id = try #require(okOut.split(separator: "\n").first { $0.hasPrefix("enqueued ") }?.split(separator: " ").last.map(String.init))
        let (watched, watchedOut) = try await run(["watch", id, "--database", db])
        #expect(watched == 0 && watchedOut.contains("slept_seconds"), "\(watchedOut)")
        server.signal(SIGTERM)
        #expect(await server.waitForExit(timeout: .seconds(20)) == 0)
    }
}

extension Array {
    func asyncAllSatisfy(_ predicate: (Element) async throws -> Bool) async rethrows -> Bool {
        for element in self where try await !predicate(element) { return false }
        return true
    }
}
