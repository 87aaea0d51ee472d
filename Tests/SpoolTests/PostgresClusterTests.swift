import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SpoolCore
import SpoolDemoJobs
import SpoolPostgres
import Synchronization
import Testing

/// Real `spool` processes sharing one PostgreSQL database.
@Suite("PostgreSQL cluster", .serialized, .timeLimit(.minutes(6)),
       .enabled(if: PostgresTestDatabase.serverURL != nil || PostgresTestDatabase.required))
struct PostgresClusterTests {
    /// Starts `spool serve` and returns it with its port (read from its log).
    static func gateway(_ url: String, _ dir: TempDir, _ name: String, extra: [String] = []) async throws -> (SpoolProcess, Int) {
        let process = try SpoolProcess(["serve", "--database", url, "--port", "0", "--no-workers"] + extra, logTo: dir.file("\(name).log"))
        var port: Int?
        _ = try await eventually(timeout: .seconds(30)) {
            if let range = process.output.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(process.output[range].split(separator: ":").last ?? "")
            }
            return port != nil || !process.process.isRunning
        }
        guard let port else { throw CLIMissing(searched: "gateway \(name) did not start:\n\(process.output)") }
        return (process, port)
    }

    static func post(_ port: Int, _ path: String, _ body: String) async throws -> (Int, Data) {
        let (status, data, _) = try await postWithHeaders(port, path, body)
        return (status, data)
    }

    static func postWithHeaders(_ port: Int, _ path: String, _ body: String) async throws -> (Int, Data, HTTPHeaders) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        return (Int(response.status.code), Data(buffer: try await response.body.collect(upTo: 16 << 20)), response.headers)
    }

    /// The ids of the jobs a batch enqueue answered with.
    static func ids(_ body: Data) -> [String] {
        guard case .object(let o)? = JSONValue(json: body), case .array(let jobs)? = o["jobs"] else { return [] }
        return jobs.compactMap { if case .object(let j) = $0, case .string(let id)? = j["id"] { id } else { nil } }
    }

    @Test("2 gateways and 3 workers: 5,000 jobs through both gateways, a worker SIGKILLed mid-run; every job completes once, by its last lease, and SSE on gateway 1 sees gateway 2's jobs")
    func twoGatewaysThreeWorkers() async throws {
        try await PostgresTestDatabase.with { url in
            let dir = TempDir()
            defer { dir.remove() }
            let record = dir.file("runs.log")
            let (g1, port1) = try await Self.gateway(url, dir, "gateway1")
            let (g2, port2) = try await Self.gateway(url, dir, "gateway2")
            let workerArgs = ["worker", "--database", url, "--concurrency", "16", "--lease-seconds", "5", "--heartbeat-seconds", "0.5", "--grace-seconds", "5"]
            var workers = try (1...3).map {
                try SpoolProcess(workerArgs, logTo: dir.file("worker\($0).log"), environment: [DemoSleep.recordRunsVariable: record])
            }
            defer { for w in workers + [g1, g2] { w.signal(SIGKILL) } }

            // Gateway 1 streams every event; we note the completions it shows. Like any SSE
            // client, it resumes with Last-Event-ID when the stream ends (the gateway closes a
            // subscriber that falls too far behind, and this test process is busy).
            let completedOn1 = Mutex<Set<String>>([])
            let reconnects = Mutex(0)
            let sse = Task {
                var lastID: String?
                for attempt in 0..<100 {  // bounded; each pass reads until the stream ends
                    if attempt > 0 { reconnects.withLock { $0 += 1 } }
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port1)/v1/events?queue=default")
                    request.headers.add(name: "Accept", value: "text/event-stream")
                    if let lastID { request.headers.add(name: "Last-Event-ID", value: lastID) }
                    guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(600)) else {
                        try await Task.sleep(for: .milliseconds(100))
                        continue
                    }
                    var text = ""
                    do {
                        for try await chunk in response.body {
                            text += String(buffer: chunk)
                            while let end = text.range(of: "\n\n") {
                                let frame = text[..<end.lowerBound]
                                text = String(text[end.upperBound...])
                                let lines = frame.split(separator: "\n")
                                if let id = lines.first(where: { $0.hasPrefix("id: ") }) { lastID = String(id.dropFirst(4)) }
                                guard frame.contains("\"completed\""), let data = lines.first(where: { $0.hasPrefix("data: ") }),
                                      case .object(let e)? = JSONValue(json: Data(data.dropFirst(6).utf8)), case .string(let id)? = e["job_id"] else { continue }
                                completedOn1.withLock { _ = $0.insert(id) }
                            }
                        }
                    } catch {
                        if Task.isCancelled { return }
                    }
                }
            }
            defer { sse.cancel() }
            try await Task.sleep(for: .milliseconds(300))

            // 5,000 jobs in batches of 100, alternating gateways.
            var viaGateway2: [String] = []
            var all: [String] = []
            let job = #"{"kind": "demo.sleep", "payload": {"seconds": 0.02, "steps": 1}}"#
            for batch in 0..<50 {
                let port = batch % 2 == 0 ? port1 : port2
                let (status, body) = try await Self.post(port, "/v1/jobs/batch", #"{"jobs": ["# + Array(repeating: job, count: 100).joined(separator: ",") + "]}")
                #expect(status == 202, "\(String(decoding: body, as: UTF8.self))")
                let ids = Self.ids(body)
                all += ids
                if port == port2 { viaGateway2 += ids }
            }
            #expect(all.count == 5000)

            let store = try PostgresJobStore(url: url)
            try await store.migrate()
            defer { Task { try? await store.close() } }
            func completed() async throws -> Int {
                try await store.queueStats(tenant: nil).first { $0.name == "default" }?.counts[.completed] ?? 0
            }
            // Kill one worker while it holds jobs.
            #expect(try await eventually(timeout: .seconds(60)) { try await completed() >= 800 })
            let killed = ":\(workers[1].process.processIdentifier):"  // host:pid:random
            workers[1].signal(SIGKILL)
            #expect(await workers[1].waitForExit(timeout: .seconds(10)) != nil)

            let finished = try await eventually(timeout: .seconds(180)) { try await completed() == 5000 }
            let count = try await completed()
            #expect(finished, "completed \(count) of 5000; worker logs:\n\(workers[0].output.suffix(2000))")

            // Every job completed, and its result came from its last attempt's worker.
            var rerun: Set<String> = []
            for id in all {
                let jobID = try #require(JobID(id))
                let job = try #require(try await store.job(jobID, tenant: nil))
                #expect(job.state == .completed)
                guard case .object(let result)? = job.result.flatMap({ JSONValue(json: $0) }) else { Issue.record("no result for \(id)"); continue }
                #expect(result["attempt"]?.doubleValue == Double(job.attempt), "job \(id): result of attempt \(String(describing: result["attempt"])) but the job is at attempt \(job.attempt)")
                #expect(result["worker"] == .string(job.workerID ?? ""), "job \(id): result written by \(String(describing: result["worker"])), lease held by \(job.workerID ?? "-")")
                if job.attempt > 1 { rerun.insert(id) }
            }
            // Every run was recorded (`<id> <attempt> <worker>`). Only jobs the killed worker had
            // taken ran again: those it was running, and those it had finished but whose
            // completion had not committed yet. A job a live worker ran twice would mean a lease
            // lost under load.
            let runs = (try? String(contentsOfFile: record, encoding: .utf8)) ?? ""
            var runsPerJob: [String: [(attempt: Int, worker: String)]] = [:]
            for line in runs.split(separator: "\n") {
                let parts = line.split(separator: " ").map(String.init)
                guard parts.count == 3, let attempt = Int(parts[1]) else { Issue.record("bad run record: \(line)"); continue }
                runsPerJob[parts[0], default: []].append((attempt, parts[2]))
            }
            #expect(Set(runsPerJob.keys) == Set(all))
            for (id, runs) in runsPerJob where runs.count > 1 {
                let earlier = runs.sorted { $0.attempt < $1.attempt }.dropLast()
                #expect(earlier.allSatisfy { $0.worker.contains(killed) }, "job \(id) ran again after a run on a live worker: \(runs)")
            }
            // A second attempt only for leases the killed worker held: at most twice its
            // concurrency (jobs running or not yet started, and outcomes being stored).
            #expect(rerun.count <= 32, "\(rerun.count) jobs needed a second attempt")

            // The stream on gateway 1 showed the jobs enqueued on gateway 2.
            #expect(try await eventually(timeout: .seconds(10)) { completedOn1.withLock { $0.isSuperset(of: viaGateway2) } },
                    "gateway 1 saw \(completedOn1.withLock { $0.intersection(viaGateway2).count }) of \(viaGateway2.count) completions of gateway 2's jobs (\(reconnects.withLock { $0 }) reconnects)")
            for w in workers where w.process.isRunning { w.signal(SIGTERM) }
            workers.removeAll()
        }
    }

    @Test("the database restarts mid-run: the gateway answers 503 with Retry-After while it is down, and nothing is lost")
    func databaseRestart() async throws {
        let env = ProcessInfo.processInfo.environment
        guard let bin = env["SPOOL_PG_BIN"], let shared = PostgresTestDatabase.serverURL,
              let sharedPort = URLComponents(string: shared)?.port else {
            Issue.record("SPOOL_PG_BIN and SPOOL_TEST_POSTGRES_URL must name the test server (.ci/postgres.sh exports them)")
            return
        }
        // A server of this test's own: stopping the shared one would fail every other
        // PostgreSQL test running meanwhile.
        let dataDir = NSTemporaryDirectory() + "spool-pg-restart-\(UUID().uuidString.prefix(8))"
        let port = sharedPort + 100
        // system(3), not Foundation's Process: its wait can miss the exit of a child that
        // leaves a daemon behind (pg_ctl start). The server must not inherit this process's
        // open sockets (other tests' connections would then never close), so a script closes
        // every descriptor above 2 (but its own, 255) before it runs the command.
        let script = NSTemporaryDirectory() + "spool-pgctl-\(UUID().uuidString.prefix(8)).sh"
        defer { try? FileManager.default.removeItem(atPath: script) }
        func asPostgres(_ command: String) throws {
            let run = getuid() == 0 ? "su -s /bin/sh postgres -c '\(command)'" : command
            let text = """
                for fd in /proc/$$/fd/*; do n=${fd##*/}; if [ "$n" -gt 2 ] && [ "$n" -ne 255 ]; then eval "exec $n>&-"; fi; done 2>/dev/null
                exec \(run)

                """
            try text.write(toFile: script, atomically: true, encoding: .utf8)
            let status = system("/bin/bash \(script)")
            guard status == 0 else { throw CLIMissing(searched: "\(command) failed (\(status))") }
        }
        func pgctl(_ args: String) throws { try asPostgres("\(bin)/pg_ctl -D \(dataDir)/data -w \(args) >/dev/null 2>&1") }
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        if getuid() == 0 { _ = system("chown postgres \(dataDir)") }
        defer {
            try? pgctl("-m immediate stop")
            try? FileManager.default.removeItem(atPath: dataDir)
        }
        try asPostgres("\(bin)/initdb -D \(dataDir)/data -U spool -A trust -E UTF8 --no-locale >/dev/null 2>&1")
        let conf = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(dataDir)/data/postgresql.conf"))
        try conf.seekToEnd()
        try conf.write(contentsOf: Data("\nport = \(port)\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '\(dataDir)'\n".utf8))
        try conf.close()
        try pgctl("-l \(dataDir)/server.log start")
        let url = "postgres://spool@127.0.0.1:\(port)/postgres"
        do {
            let dir = TempDir()
            defer { dir.remove() }
            let config = dir.file("spool.yaml")
            try "postgres:\n  operation_timeout_seconds: 2\n".write(toFile: config, atomically: true, encoding: .utf8)
            let (gateway, port) = try await Self.gateway(url, dir, "gateway", extra: ["--config", config])
            let worker = try SpoolProcess(["worker", "--database", url, "--config", config, "--concurrency", "8", "--lease-seconds", "5", "--heartbeat-seconds", "1"],
                                          logTo: dir.file("worker.log"))
            defer { gateway.signal(SIGKILL); worker.signal(SIGKILL) }
            var all: [String] = []
            let job = #"{"kind": "demo.sleep", "payload": {"seconds": 0.05, "steps": 1}}"#
            for _ in 0..<5 {
                let (status, body) = try await Self.post(port, "/v1/jobs/batch", #"{"jobs": ["# + Array(repeating: job, count: 100).joined(separator: ",") + "]}")
                #expect(status == 202)
                all += Self.ids(body)
            }
            try await Task.sleep(for: .milliseconds(500))
            try pgctl("-m fast stop")
            let (down, body, headers) = try await Self.postWithHeaders(port, "/v1/jobs", job)
            #expect(down == 503, "while the database is down: \(down) \(String(decoding: body, as: UTF8.self))")
            #expect(headers.first(name: "Retry-After") != nil)
            try pgctl("-l \(dataDir)/server.log start")
            // Enqueues work again once it is back.
            #expect(try await eventually(timeout: .seconds(30)) { (try? await Self.post(port, "/v1/jobs", job).0) == 202 })

            let store = try PostgresJobStore(url: url)
            try await store.migrate()
            defer { Task { try? await store.close() } }
            let done = try await eventually(timeout: .seconds(120)) {
                var n = 0
                for id in all where try await store.job(JobID(id)!, tenant: nil)?.state == .completed { n += 1 }
                return n == all.count
            }
            #expect(done, "not every job completed after the restart; worker log:\n\(worker.output.suffix(3000))")
        }
    }
}
