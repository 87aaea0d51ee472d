import Foundation
import SpoolCore
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
        setenv("SPOOL_TEST_SECRET_NOT_FOR_COMMANDS", "hidden", 1)
        let kinds = [
            CommandKind(kind: "cmd.echo", arguments: try script(dir, "echo.sh", """
                echo "spool:progress 40 reading input" >&2
                echo "just a log line" >&2
                input=$(cat)
                printf '{"input":%s,"id":"%s","attempt":%s,"kind":"%s","queue":"%s","extra":"%s","secret":"%s"}' \
                  "$input" "$SPOOL_JOB_ID" "$SPOOL_JOB_ATTEMPT" "$SPOOL_JOB_KIND" "$SPOOL_JOB_QUEUE" "$EXTRA" "$SPOOL_TEST_SECRET_NOT_FOR_COMMANDS"
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
            #expect(result["secret"] == .string(""), "Spool's own SPOOL_* variables reached the command")
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
            """), timeout: .seconds(1), gracePeriod: .milliseconds(500))
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
