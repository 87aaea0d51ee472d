import Foundation
import SpoolCore
import Testing

/// The command line of a newcomer's first hour (issue 15), through the real `spool` binary.
@Suite("The CLI: one set of rules, operator commands, usage and errors", .serialized)
struct CLITests {
    /// Runs `spool args` to its end in `dir`; returns its status and what it printed.
    static func run(_ args: [String], in dir: TempDir, environment: [String: String] = [:], timeout: Duration = .seconds(30)) async throws -> (Int32, String) {
        let p = try SpoolProcess(args, logTo: dir.file("cli-\(UUID().uuidString).log"), environment: environment, directory: dir.path)
        let status = await p.waitForExit(timeout: timeout)
        return (status ?? -1, p.output)
    }

    @Test("on a database file the CLI refuses what the API refuses: unknown kinds (by the registry and by a queue's list), unknown queues, callback URLs the policy refuses, pausing a queue that does not exist")
    func sameRulesAsTheAPI() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let db = dir.file("rules.sqlite")
        try """
            queues:
              listed:
                kinds: [listed.kind]
            """.write(toFile: dir.file("spool.yaml"), atomically: true, encoding: .utf8)
        func cli(_ args: [String]) async throws -> (Int32, String) { try await Self.run(args + ["--database", db], in: dir) }

        // A worker process announces its kinds (the demo kinds) in the registry.
        let worker = try SpoolProcess(["worker", "--database", db, "--queues", "default,images"], logTo: dir.file("worker.log"), directory: dir.path)
        #expect(try await eventually(timeout: .seconds(30)) {
            let (_, out) = try await cli(["workers", "--json"])
            return out.contains("demo.noop")
        }, "\(worker.output)")

        let (typo, typoOut) = try await cli(["enqueue", "--kind", "my.thing"])
        #expect(typo == 1 && typoOut.contains("unknown kind 'my.thing'") && typoOut.contains("demo.noop"), "\(typoOut)")
        let (known, knownOut) = try await cli(["enqueue", "--kind", "demo.noop"])
        #expect(known == 0 && knownOut.contains("\"state\""), "\(knownOut)")
        // A queue no config names, but a worker works: known.
        let (worked, workedOut) = try await cli(["enqueue", "--kind", "demo.noop", "--queue", "images"])
        #expect(worked == 0, "\(workedOut)")
        let (queue, queueOut) = try await cli(["enqueue", "--kind", "demo.noop", "--queue", "nope"])
        #expect(queue == 1 && queueOut.contains("unknown queue 'nope'"), "\(queueOut)")
        // A queue with its own list takes only those kinds, whatever runs elsewhere.
        let (listed, listedOut) = try await cli(["enqueue", "--kind", "demo.noop", "--queue", "listed"])
        #expect(listed == 1 && listedOut.contains("unknown kind 'demo.noop' for queue 'listed'"), "\(listedOut)")
        let (inList, inListOut) = try await cli(["enqueue", "--kind", "listed.kind", "--queue", "listed"])
        #expect(inList == 0, "\(inListOut)")
        let (callback, callbackOut) = try await cli(["enqueue", "--kind", "demo.noop", "--callback-url", "http://127.0.0.1:1/"])
        #expect(callback == 1 && callbackOut.contains("callback_url") && callbackOut.contains("loopback"), "\(callbackOut)")
        let (pause, pauseOut) = try await cli(["pause", "nosuchqueue"])
        #expect(pause == 1 && pauseOut.contains("queue 'nosuchqueue' not found") && !pauseOut.contains("paused nosuchqueue"), "\(pauseOut)")
        let (reserved, reservedOut) = try await cli(["enqueue", "--kind", "spool.webhook", "--queue", "spool.webhooks"])
        #expect(reserved == 1 && reservedOut.contains("reserved"), "\(reservedOut)")

        // The queue listing shows every setting, and which kinds a queue takes.
        let (_, queuesOut) = try await cli(["queues", "--json"])
        let queues = try JSONDecoder().decode([QueueDocument].self, from: Data(queuesOut.utf8))
        let listedQueue = try #require(queues.first { $0.name == "listed" })
        #expect(listedQueue.kinds == ["listed.kind"] && listedQueue.max_attempts == 5 && listedQueue.timeout_seconds == 3600)
        #expect(listedQueue.backoff?.initial_seconds == 2)
        #expect(queues.first { $0.name == "default" }?.kinds?.contains("demo.noop") == true)
        worker.signal(SIGTERM)
        _ = await worker.waitForExit(timeout: .seconds(15))
    }

    @Test("delete, redrive, purge and events: what the API has, from the command line, on a file and through a gateway")
    func operatorCommands() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let db = dir.file("ops.sqlite")
        try "queues:\n  parked: {}\n".write(toFile: dir.file("spool.yaml"), atomically: true, encoding: .utf8)
        func cli(_ args: [String]) async throws -> (Int32, String) { try await Self.run(args + ["--database", db], in: dir) }
        func id(_ out: String) throws -> JobID { try #require(JobID(try JSONDecoder().decode(JobDocument.self, from: Data(out.utf8)).id)) }

        // The feed, one JSON object per line, from the start of the (empty) log: it waits for
        // what is enqueued next.
        let feed = try SpoolProcess(["events", "--database", db, "--queue", "parked", "--after", "0", "--limit", "2"], logTo: dir.file("feed.log"), directory: dir.path)
        let (_, a) = try await cli(["enqueue", "--queue", "parked", "--kind", "demo.noop"])
        let (_, b) = try await cli(["enqueue", "--queue", "parked", "--kind", "demo.noop"])
        let first = try id(a), second = try id(b)
        #expect(await feed.waitForExit(timeout: .seconds(20)) == 0, "\(feed.output)")
        let lines = feed.output.split(separator: "\n").compactMap { JSONValue(json: Data($0.utf8)) }
        #expect(lines.count == 2, "\(feed.output)")
        for line in lines {
            guard case .object(let o) = line else { Issue.record("not an object: \(line)"); continue }
            #expect(o["type"] == "state" && o["state"] == "pending" && o["queue"] == "parked" && o["id"]?.doubleValue != nil, "\(o)")
        }

        let (p0, refused) = try await cli(["purge", "parked"])
        #expect(p0 == 64 && refused.contains("--yes") && refused.contains("Usage: spool purge"), "\(refused)")
        let (c, _) = try await cli(["cancel", first.description])
        #expect(c == 0)
        let (d, deleted) = try await cli(["delete", first.description])
        #expect(d == 0 && deleted.contains("deleted \(first)"), "\(deleted)")
        let (g, gone) = try await cli(["get", first.description])
        #expect(g == 1 && gone.contains("not found"), "\(gone)")
        let (p, purged) = try await cli(["purge", "parked", "--yes", "--json"])
        #expect(p == 0 && purged.contains("\"purged\" : 1"), "\(purged)")
        let (g2, _) = try await cli(["get", second.description])
        #expect(g2 == 1)

        // A failed job redriven: from a gateway this time (the same commands with --url).
        let server = try SpoolProcess(["serve", "--database", db, "--port", "0"], logTo: dir.file("serve.log"), directory: dir.path)
        #expect(try await eventually(timeout: .seconds(30)) { server.output.contains("HTTP API listening") }, "\(server.output)")
        let listening = try #require(server.output.range(of: #"http://127\.0\.0\.1:\d+"#, options: .regularExpression))
        let url = String(server.output[listening])
        let (f, failed) = try await Self.run(["enqueue", "--url", url, "--kind", "demo.flaky", "--payload", #"{"always": true}"#, "--max-attempts", "1", "--wait"], in: dir)
        #expect(f == 1, "\(failed)")
        let (r, redriven) = try await Self.run(["redrive", "default", "--url", url, "--json"], in: dir)
        #expect(r == 0 && redriven.contains("\"retried\" : 1"), "\(redriven)")
        let (r2, none) = try await Self.run(["redrive", "nosuchqueue", "--url", url], in: dir)
        #expect(r2 == 1 && none.contains("404") && none.contains("not found"), "\(none)")
        let (e, events) = try await Self.run(["events", "--url", url, "--after", "0", "--limit", "3", "--kind", "demo.flaky"], in: dir)
        #expect(e == 0 && events.split(separator: "\n").count == 3 && events.contains("\"kind\":\"demo.flaky\""), "\(events)")
        server.signal(SIGTERM)
        _ = await server.waitForExit(timeout: .seconds(15))
    }

    @Test("options a command cannot use are not offered; input errors print the subcommand's usage; an unreachable gateway is said in words")
    func usageAndErrors() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        for command in ["get", "list", "watch", "queues", "events"] {
            let (_, help) = try await Self.run([command, "--help"], in: dir)
            #expect(help.contains("--url") && !help.contains("--durability"), "\(command): \(help)")
        }
        for command in ["serve", "migrate"] {
            let (_, help) = try await Self.run([command, "--help"], in: dir)
            #expect(help.contains("--database") && !help.contains("--url") && !help.contains("--token"), "\(command): \(help)")
        }
        let (_, enqueueHelp) = try await Self.run(["enqueue", "--help"], in: dir)
        #expect(enqueueHelp.contains("--durability") && enqueueHelp.contains("--url"))
        let (s, refused) = try await Self.run(["serve", "--url", "http://127.0.0.1:1"], in: dir)
        #expect(s == 64 && refused.contains("Unknown option '--url'"), "\(refused)")

        let (g, bad) = try await Self.run(["get", "not-a-uuid", "--database", dir.file("u.sqlite")], in: dir)
        #expect(g == 64 && bad.contains("not a job id") && bad.contains("Usage: spool get") && bad.contains("spool get --help"), "\(bad)")
        let (l, state) = try await Self.run(["list", "--state", "bogus", "--database", dir.file("u.sqlite")], in: dir)
        #expect(l == 64 && state.contains("Usage: spool list"), "\(state)")

        // Which one a command uses: the command line, then SPOOL_URL, then SPOOL_DATABASE.
        let both = ["SPOOL_URL": "http://127.0.0.1:9", "SPOOL_DATABASE": dir.file("env.sqlite")]
        let (f, onFile) = try await Self.run(["list", "--database", dir.file("u.sqlite")], in: dir, environment: both)
        #expect(f == 0, "\(onFile)")
        let (r, remote) = try await Self.run(["list"], in: dir, environment: both)
        #expect(r == 1 && remote.contains("http://127.0.0.1:9"), "\(remote)")
        let (u, unreachable) = try await Self.run(["list", "--url", "http://127.0.0.1:9"], in: dir)
        #expect(u == 1 && unreachable.contains("the gateway at http://127.0.0.1:9 is not reachable"), "\(unreachable)")
        #expect(!unreachable.contains("NIO") && !unreachable.contains("errno"), "\(unreachable)")
    }

    @Test("start-up warns about queues this process works without a handler for any of their kinds")
    func idleQueueWarning() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try "queues:\n  reports:\n    kinds: [reports.build]\n".write(toFile: dir.file("spool.yaml"), atomically: true, encoding: .utf8)
        let server = try SpoolProcess(["serve", "--database", dir.file("w.sqlite"), "--port", "0"], logTo: dir.file("serve.log"), directory: dir.path)
        #expect(try await eventually(timeout: .seconds(30)) { server.output.contains("HTTP API listening") }, "\(server.output)")
        #expect(server.output.contains("works queue 'reports' but has a handler for none of its kinds"), "\(server.output)")
        #expect(!server.output.contains("works queue 'default'"), "\(server.output)")
        server.signal(SIGTERM)
        _ = await server.waitForExit(timeout: .seconds(15))
    }
}
