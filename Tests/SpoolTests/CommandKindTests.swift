import Foundation
import SpoolCore
@testable import SpoolClient
@testable import SpoolKinds
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Whether a process still runs (a zombie waiting for init to reap it does not count).
private func isRunning(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
    // "pid (comm) S ...": the state follows the last ')'.
    guard let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
    return state != "Z" && state != "X"
}

private func pids(in file: String) -> [pid_t] {
    ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(whereSeparator: \.isNewline).compactMap { pid_t($0) }
}

@Suite("Command kinds", .serialized, .timeLimit(.minutes(3)))
struct CommandKindTests {
    /// A shell script in `dir`, run by /bin/sh (the kind's argument list, no shell in between).
    private func script(_ dir: TempDir, _ name: String, _ text: String) throws -> [String] {
        try text.write(toFile: dir.file(name), atomically: true, encoding: .utf8)
        return ["/bin/sh", dir.file(name)]
    }

    @Test("a command kind: exit 0 completes with its JSON output, progress lines report progress, a failure retries with stderr's tail, exit 65 fails for good, output past the limit and non-JSON output fail")
    func outcomes() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        // Spool's environment holds secrets (tokens, ${VAR} values): none reaches a command.
        setenv("SPOOL_TEST_SECRET_NOT_FOR_COMMANDS", "hidden", 1)
        setenv("IFC_TOKEN_NOT_FOR_COMMANDS", "hidden", 1)
        defer { unsetenv("SPOOL_TEST_SECRET_NOT_FOR_COMMANDS"); unsetenv("IFC_TOKEN_NOT_FOR_COMMANDS") }
        let kinds = [
            CommandKind(kind: "cmd.echo", arguments: try script(dir, "echo.sh", """
                echo "spool:progress 40 reading input" >&2
                echo "just a log line" >&2
                input=$(cat)
                printf '{"input":%s,"id":"%s","attempt":%s,"kind":"%s","queue":"%s","extra":"%s","secret":"%s%s","path":"%s"}' \
                  "$input" "$SPOOL_JOB_ID" "$SPOOL_JOB_ATTEMPT" "$SPOOL_JOB_KIND" "$SPOOL_JOB_QUEUE" "$EXTRA" \
                  "$SPOOL_TEST_SECRET_NOT_FOR_COMMANDS" "$IFC_TOKEN_NOT_FOR_COMMANDS" "$PATH"
                """), environment: ["EXTRA": "from-config"]),
            CommandKind(kind: "cmd.flaky", arguments: try script(dir, "flaky.sh", """
                if [ "$SPOOL_JOB_ATTEMPT" = 1 ]; then echo "first line" >&2; echo "boom: disk not ready" >&2; exit 3; fi
                echo '{"ok":true}'
                """)),
            CommandKind(kind: "cmd.bad", arguments: try script(dir, "bad.sh", "echo 'no such template' >&2; exit 65")),
            CommandKind(kind: "cmd.true", arguments: ["/bin/true"]),
            CommandKind(kind: "cmd.huge", arguments: ["/usr/bin/head", "-c", "3000000", "/dev/zero"]),
            CommandKind(kind: "cmd.text", arguments: ["/bin/echo", "not json"]),
        ]
        try await withEngine(on: .sqlite, fastConfiguration { $0.defaultQueue.maxAttempts = 3 }, register: { spool in
            for kind in kinds { spool.register(kind.handler()) }
        }) { spool, _ in
            var ids: [String: JobID] = [:]
            for kind in ["echo", "flaky", "bad", "true", "huge", "text"] {
                ids[kind] = try await spool.enqueue(NewJob(kind: "cmd.\(kind)", payload: Data(#"{"n":7}"#.utf8),
                                                           maxAttempts: kind == "huge" ? 1 : nil)).job.id
            }
            var done: [String: Job] = [:]
            for (name, id) in ids { done[name] = try await spool.waitUntilFinished(id, timeout: .seconds(60)) }

            let echo = try #require(done["echo"])
            #expect(echo.state == .completed)
            guard case .object(let result)? = echo.result.flatMap({ JSONValue(json: $0) }) else {
                Issue.record("no JSON result: \(String(describing: echo.result))"); return
            }
            #expect(result["input"] == .object(["n": .integer(7)]))
            #expect(result["id"] == .string(echo.id.description) && result["attempt"] == .integer(1))
            #expect(result["kind"] == .string("cmd.echo") && result["queue"] == .string("default"))
            #expect(result["extra"] == .string("from-config"))
            #expect(result["secret"] == .string(""), "Spool's environment reached the command")
            #expect(result["path"] != .string(""), "PATH is passed on")
            #expect(echo.progress?.percent == 40 && echo.progress?.message == "reading input")

            let flaky = try #require(done["flaky"])
            #expect(flaky.state == .completed && flaky.attempt == 2 && flaky.result == Data("{\"ok\":true}\n".utf8))
            let flakyError = try #require(flaky.errors.first)
            #expect(flakyError.message.contains("status 3") && flakyError.message.contains("boom: disk not ready"), "\(flakyError.message)")
            #expect(flakyError.reason == "error")

            let bad = try #require(done["bad"])
            #expect(bad.state == .failed && bad.attempt == 1 && bad.errors.first?.reason == "non_retryable")
            #expect(bad.errors.first?.message.contains("no such template") == true)

            #expect(done["true"]?.state == .completed && done["true"]?.result == nil)
            #expect(done["huge"]?.state == .failed && done["huge"]?.errors.first?.message.contains("more than") == true)
            #expect(done["text"]?.state == .failed && done["text"]?.errors.first?.reason == "non_retryable")
        }
    }

    @Test("a timeout ends the command and the grandchild it started, both ignoring SIGTERM; nothing is left running")
    func timeoutKillsTheProcessGroup() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pidFile = dir.file("pids")
        // Both the command and its grandchild ignore SIGTERM: only the SIGKILL after the grace
        // period, sent to the whole group, ends them.
        let kind = CommandKind(kind: "cmd.stuck", arguments: try script(dir, "stuck.sh", """
            trap '' TERM
            sleep 300 &
            echo $! >> \(pidFile)
            echo $$ >> \(pidFile)
            wait
            """), timeout: .seconds(3), gracePeriod: .milliseconds(500))
        try await withEngine(on: .sqlite, fastConfiguration { $0.defaultQueue.maxAttempts = 1 }, register: { spool in
            spool.register(kind.handler())
        }) { spool, _ in
            let id = try await spool.enqueue(NewJob(kind: "cmd.stuck")).job.id
            let job = try await spool.waitUntilFinished(id, timeout: .seconds(30))
            #expect(job.state == .failed && job.errors.first?.message.contains("did not finish within") == true, "\(job.errors)")
            let started = pids(in: pidFile)
            #expect(started.count == 2, "the script did not record its processes")
            #expect(await eventually(timeout: .seconds(10)) { !started.contains(where: isRunning) }, "left running: \(started.filter(isRunning))")
        }
    }

    @Test("cancelling a job mid-run ends its command and the command's children")
    func cancelMidRun() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let pidFile = dir.file("pids")
        let kind = CommandKind(kind: "cmd.long", arguments: try script(dir, "long.sh", """
            sleep 300 &
            echo $! >> \(pidFile)
            echo $$ >> \(pidFile)
            echo "spool:progress 10 started" >&2
            wait
            """), gracePeriod: .seconds(2))
        try await withEngine(on: .sqlite, register: { spool in spool.register(kind.handler()) }) { spool, _ in
            let id = try await spool.enqueue(NewJob(kind: "cmd.long")).job.id
            #expect(await eventually(timeout: .seconds(20)) { (try? await spool.job(id))??.progress?.percent == 10 })
            let started = pids(in: pidFile)
            #expect(started.count == 2 && started.allSatisfy(isRunning))
            _ = try await spool.cancel(id)
            #expect(await eventually(timeout: .seconds(10)) { !started.contains(where: isRunning) }, "left running: \(started.filter(isRunning))")
            #expect(try await spool.job(id)?.state == .cancelled)
        }
    }

    @Test("progress lines are parsed strictly; the error tail is bounded and keeps the last lines")
    func parsing() {
        #expect(CommandKind.parseProgress(Array("spool:progress 40 resizing images".utf8))! == (40, "resizing images"))
        #expect(CommandKind.parseProgress(Array("spool:progress 100".utf8))! == (100, nil))
        #expect(CommandKind.parseProgress(Array("spool:progress 140 too much".utf8)) == nil)
        #expect(CommandKind.parseProgress(Array("spool:progress x".utf8)) == nil)
        #expect(CommandKind.parseProgress(Array("progress 40".utf8)) == nil)
        var tail = CommandKind.ErrorTail()
        for i in 0..<1000 { tail.append(Array("line \(i)".utf8)) }
        #expect(tail.text.utf8.count <= CommandKind.errorTailBytes && tail.text.hasSuffix("line 999") && !tail.text.contains("line 1\n"))
    }
}

@Suite("Kinds from spool.yaml", .serialized, .timeLimit(.minutes(3)))
struct DeclaredKindTests {
    @Test("spool serve runs a command kind from spool.yaml, lists its kinds at GET /v1/kinds, and refuses a payload that fails a kind's schema with 422 and the failing path, writing nothing")
    func commandKindAndSchemas() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try """
        queues:
          fast: &fast { concurrency: 2 }
          slow: { <<: *fast, timeout_seconds: 60 }
        kinds:
          video.thumbnail:
            command: ["/bin/sh", "-c", "echo 'spool:progress 50 half way' >&2; cat"]
            timeout_seconds: 20
            payload_schema:
              type: object
              required: [url]
              properties:
                url: { type: string, pattern: "^https?://" }
                size: { type: integer, minimum: 16 }
          ifc.clash:
            payload_schema: { type: object, required: [model], properties: { mode: { enum: ["on", "off"] }, note: { type: [string, "null"] } } }
        """.write(toFile: dir.file("spool.yaml"), atomically: true, encoding: .utf8)
        let server = try SpoolProcess(["serve", "--database", dir.file("s.sqlite"), "--port", "0", "--config", dir.file("spool.yaml")],
                                      logTo: dir.file("serve.log"), directory: dir.path)
        defer { server.signal(SIGKILL) }
        let client = SpoolClient(url: "http://127.0.0.1:\(try await listeningPort(of: server))")
        #expect(await eventually(timeout: .seconds(30)) { (try? await client.queues()) != nil }, "serve did not start:\n\(server.output)")

        // The kinds, how they run, where they are accepted, and their schemas.
        guard case .object(let body)? = JSONValue(json: try await client.send(.GET, "/v1/kinds")), case .array(let kinds)? = body["kinds"] else {
            Issue.record("GET /v1/kinds is not a list"); return
        }
        let byName = Dictionary(uniqueKeysWithValues: kinds.compactMap { kind -> (String, [String: JSONValue])? in
            guard case .object(let o) = kind, case .string(let name)? = o["kind"] else { return nil }
            return (name, o)
        })
        #expect(byName["video.thumbnail"]?["runs"] == .string("command") && byName["ifc.clash"]?["runs"] == .string("elsewhere"))
        #expect(byName["video.thumbnail"]?["queues"] == .array([.string("default"), .string("fast"), .string("slow")]))
        #expect(byName["demo.sleep"]?["runs"] == .string("swift"))
        if case .object(let schema)? = byName["video.thumbnail"]?["payload_schema"] { #expect(schema["required"] == .array([.string("url")])) } else {
            Issue.record("no payload_schema for video.thumbnail")
        }

        // Refused with the failing path; nothing written, in a batch either.
        for (kind, payload, field) in [("video.thumbnail", #"{"url":"ftp://x"}"#, "payload/url"), ("video.thumbnail", #"{"url":"http://x","size":8}"#, "payload/size"),
                                       ("ifc.clash", "{}", "payload")] {
            do {
                _ = try await client.enqueue(NewJob(kind: kind, payload: Data(payload.utf8)))
                Issue.record("\(kind) \(payload) was accepted")
            } catch let error as SpoolClientError {
                #expect(error.status == 422 && error.detail.hasPrefix(field + ":"), "\(error)")
            }
        }
        await #expect(throws: SpoolClientError.self) {
            _ = try await client.enqueue([NewJob(kind: "ifc.clash", payload: Data(#"{"model":"a"}"#.utf8)), NewJob(kind: "ifc.clash", payload: Data("{}".utf8))])
        }
        #expect(try await client.list(JobFilter()).jobs.isEmpty)

        // A payload that matches runs the command: its input comes back as the result.
        let id = JobID(try await client.enqueue(NewJob(kind: "video.thumbnail", payload: Data(#"{"url":"https://x/a.mp4","size":64}"#.utf8))).id)!
        let done = try await client.wait(for: id)
        #expect(done.state == .completed && done.result == .object(["url": .string("https://x/a.mp4"), "size": .integer(64)]), "\(server.output)")
        #expect(done.progress?.percent == 50 && done.progress?.message == "half way")
        // A kind declared only with a schema is accepted for a worker elsewhere; quoted YAML
        // scalars in the schema stay strings ("on", "null").
        _ = try await client.enqueue(NewJob(kind: "ifc.clash", payload: Data(#"{"model":"a.ifc","mode":"on","note":null}"#.utf8)))
    }

    @Test("spool worker --url runs the config's command kinds over the worker protocol, for a gateway that runs no workers")
    func remoteWorkerRunsCommandKinds() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        try "kinds:\n  text.upper:\n    command: [\"/bin/sh\", \"-c\", \"printf '{\\\"kind\\\":\\\"%s\\\"}' $SPOOL_JOB_KIND\"]\n"
            .write(toFile: dir.file("spool.yaml"), atomically: true, encoding: .utf8)
        let server = try SpoolProcess(["serve", "--database", dir.file("s.sqlite"), "--port", "0", "--no-workers", "--config", dir.file("spool.yaml")],
                                      logTo: dir.file("serve.log"), directory: dir.path)
        defer { server.signal(SIGKILL) }
        let url = "http://127.0.0.1:\(try await listeningPort(of: server))"
        let client = SpoolClient(url: url)
        #expect(await eventually(timeout: .seconds(30)) { (try? await client.queues()) != nil }, "serve did not start:\n\(server.output)")
        let worker = try SpoolProcess(["worker", "--url", url, "--config", dir.file("spool.yaml"), "--no-demo-jobs"],
                                      logTo: dir.file("worker.log"), directory: dir.path)
        defer { worker.signal(SIGKILL) }
        let id = JobID(try await client.enqueue(NewJob(kind: "text.upper")).id)!
        let done = try await client.wait(for: id)
        #expect(done.state == .completed && done.result == .object(["kind": .string("text.upper")]), "worker:\n\(worker.output)")
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit(timeout: .seconds(30)) == 0)
    }

    @Test("config errors stop the process at start and name the line: an unknown key (with the likely spelling), a value of the wrong type, a command that is not an executable file, a schema keyword Spool does not check")
    func configErrors() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let cases: [(String, [String])] = [
            ("queues:\n  fast:\n    concurency: 20\n", ["line 3", "unknown key 'concurency'", "queues.fast", "did you mean 'concurrency'"]),
            ("queues:\n  fast:\n    concurrency: lots\n", ["line 3", "queues.fast.concurrency must be a whole number"]),
            ("kinds:\n  video.thumbnail:\n    command: [\"thumbnail\", \"--json\"]\n", ["line 3", "kinds.video.thumbnail.command[0]", "absolute path"]),
            ("kinds:\n  video.thumbnail:\n    command: [\"/nonexistent/thumbnail\"]\n", ["line 3", "does not exist"]),
            ("kinds:\n  a.b:\n    timeout_seconds: 5\n    comand: [\"/bin/true\"]\n", ["line 4", "did you mean 'command'"]),
            ("kinds:\n  a.b:\n    payload_schema: { \"$ref\": \"#/defs/x\" }\n", ["line 3", "'$ref' is not a keyword Spool checks"]),
        ]
        for (index, (yaml, expected)) in cases.enumerated() {
            try yaml.write(toFile: dir.file("c\(index).yaml"), atomically: true, encoding: .utf8)
            let process = try SpoolProcess(["serve", "--database", dir.file("c\(index).sqlite"), "--port", "0", "--config", dir.file("c\(index).yaml")],
                                           logTo: dir.file("c\(index).log"), directory: dir.path)
            #expect(await process.waitForExit(timeout: .seconds(20)) == 1, "\(yaml)")
            for text in expected { #expect(process.output.contains(text), "\(yaml) → \(process.output)") }
            #expect(!process.output.contains("HTTP API listening"))
        }
    }
}
