import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import SpoolCore
@testable import SpoolClient
import SpoolGateway
import SpoolKinds
import Synchronization
import Testing

/// A downstream service on a loopback port: each path answers its own way, and every request
/// is kept (headers and body) for the test to check.
final class ScriptedService: Sendable {
    struct Received: Sendable {
        var path: String
        var headers: [String: String]
        var body: Data
    }
    let received = Mutex<[Received]>([])
    /// Statuses of the reports sent to the gateway's callbacks.
    let callbackStatuses = Mutex<[Int]>([])

    static func post(_ url: String, _ body: String) async throws -> Int {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        return Int(try await HTTPClient.shared.execute(request, timeout: .seconds(10)).status.code)
    }
    private let calls = Mutex<[String: Int]>([:])

    var requests: [Received] { received.withLock { $0 } }

    func run(_ body: (String) async throws -> Void) async throws {
        let router = Router()
        router.post(":name") { request, context -> Response in
            let name = context.parameters.get("name") ?? ""
            let bytes = try await request.body.collect(upTo: 1 << 20)
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            self.received.withLock { $0.append(Received(path: name, headers: headers, body: Data(buffer: bytes))) }
            let n = self.calls.withLock { $0[name, default: 0] += 1; return $0[name]! }
            func json(_ status: HTTPResponse.Status, _ text: String, _ extra: HTTPFields = [:]) -> Response {
                var fields = extra
                fields[.contentType] = "application/json"
                return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: text)))
            }
            switch name {
            case "ok": return json(.ok, #"{"converted":true,"call":\#(n)}"#)
            case "empty": return Response(status: .noContent)
            case "flaky": return n == 1 ? json(.internalServerError, #"{"error":"warming up"}"#) : json(.ok, #"{"call":\#(n)}"#)
            case "bad": return json(.unprocessableContent, #"{"error":"no such model"}"#)
            case "busy": return n == 1 ? json(.tooManyRequests, "{}", [.retryAfter: "1"]) : json(.ok, #"{"call":\#(n)}"#)
            case "busydate":
                // Retry-After as an HTTP date, three whole seconds ahead or more.
                let formatter = DateFormatter()
                formatter.locale = Locale(identifier: "en_US_POSIX")
                formatter.timeZone = TimeZone(identifier: "GMT")
                formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
                let later = formatter.string(from: Date(timeIntervalSince1970: (Date().timeIntervalSince1970 + 3).rounded(.up)))
                return n == 1 ? json(.serviceUnavailable, "{}", [.retryAfter: later]) : json(.ok, #"{"call":\#(n)}"#)
            case "later", "laterfail":
                // Takes the job, answers 202, and reports through the callbacks a moment later.
                guard case .object(let job)? = JSONValue(json: Data(buffer: bytes)), case .string(let token)? = job["lease_token"],
                      case .object(let callbacks)? = job["callbacks"], case .string(let progress)? = callbacks["progress"],
                      case .string(let complete)? = callbacks["complete"], case .string(let fail)? = callbacks["fail"] else {
                    return json(.badRequest, #"{"error":"no callbacks"}"#)
                }
                let succeed = name == "later"
                Task {
                    try await Task.sleep(for: .milliseconds(300))
                    // A report with another lease token is refused.
                    let forged = try await Self.post(complete, #"{"lease_token":"00000000-0000-0000-0000-000000000000","result":{"forged":true}}"#)
                    self.callbackStatuses.withLock { $0.append(forged) }
                    let reported = try await Self.post(progress, #"{"lease_token":"\#(token)","percent":60,"message":"converting"}"#)
                    self.callbackStatuses.withLock { $0.append(reported) }
                    try await Task.sleep(for: .milliseconds(1500))
                    let final = succeed ? try await Self.post(complete, #"{"lease_token":"\#(token)","result":{"converted":"later"}}"#)
                        : try await Self.post(fail, #"{"lease_token":"\#(token)","error":"the model is corrupt","retryable":false}"#)
                    self.callbackStatuses.withLock { $0.append(final) }
                }
                return json(.accepted, "{}")
            case "slow":
                try await Task.sleep(for: .seconds(5))
                return json(.ok, "{}")
            default: return json(.notFound, "{}")
            }
        }
        try await withLoopbackServer(router, name: "service") { port in try await body("http://127.0.0.1:\(port)") }
    }
}

private let serviceSecret = "whsec_" + Data((0..<32).map { UInt8($0) }).base64EncodedString()

@Suite("HTTP service kinds", .serialized, .timeLimit(.minutes(3)))
struct ServiceKindTests {
    @Test("a service kind: 2xx completes with the body, 5xx and 429 (with Retry-After) retry, 422 fails for good, a slow answer times out; every request is signed")
    func outcomes() async throws {
        let service = ScriptedService()
        try await service.run { base in
            let client = HTTPServiceKind.makeClient()
            defer { Task { try? await client.shutdown() } }
            var kinds = ["ok", "empty", "flaky", "bad", "busy", "busydate", "slow"].map {
                HTTPServiceKind(kind: "svc.\($0)", url: "\(base)/\($0)", headers: [("X-Token", "t-\($0)")])
            }
            // The kind's own timeout, shorter than the job's, covers the whole exchange.
            kinds.append(HTTPServiceKind(kind: "svc.bounded", url: "\(base)/slow", timeout: .seconds(1), headers: [("X-Token", "t-slow")]))
            let config = fastConfiguration { $0.defaultQueue.maxAttempts = 3 }
            try await withEngine(on: .sqlite, config, register: { spool in
                for kind in kinds { spool.register(kind.handler(client: client) { _ in serviceSecret }) }
            }) { spool, _ in
                var ids: [String: JobID] = [:]
                for name in ["ok", "empty", "flaky", "bad", "busy", "busydate"] {
                    ids[name] = try await spool.enqueue(NewJob(kind: "svc.\(name)", payload: Data(#"{"file":"\#(name).ifc"}"#.utf8))).job.id
                }
                ids["slow"] = try await spool.enqueue(NewJob(kind: "svc.slow", maxAttempts: 1, timeout: .seconds(1))).job.id
                ids["bounded"] = try await spool.enqueue(NewJob(kind: "svc.bounded", maxAttempts: 1, timeout: .seconds(30))).job.id
                var done: [String: Job] = [:]
                for (name, id) in ids { done[name] = try await spool.waitUntilFinished(id) }

                #expect(done["ok"]?.state == .completed && done["ok"]?.result == Data(#"{"converted":true,"call":1}"#.utf8))
                #expect(done["empty"]?.state == .completed && done["empty"]?.result == nil)
                #expect(done["flaky"]?.state == .completed && done["flaky"]?.attempt == 2)
                #expect(done["flaky"]?.errors.first?.message.contains("500") == true)
                #expect(done["bad"]?.state == .failed && done["bad"]?.attempt == 1 && done["bad"]?.errors.first?.reason == "non_retryable")
                #expect(done["bad"]?.errors.first?.message.contains("no such model") == true)
                for (name, wait) in [("busy", 0.9), ("busydate", 1.5)] {
                    let busy = try #require(done[name])
                    #expect(busy.state == .completed && busy.attempt == 2)
                    // The queue's backoff is 100 ms: the second attempt waited for Retry-After.
                    let failedAt = try #require(busy.errors.first?.at), finished = try #require(busy.finishedAt)
                    #expect(finished.timeIntervalSince(failedAt) >= wait, "\(name): Retry-After was not honoured")
                }
                let bounded = try #require(done["bounded"])
                #expect(bounded.state == .failed && bounded.errors.first?.message.contains("did not answer within") == true)
                // Errors kept on jobs name neither the service's URL nor its headers.
                for job in done.values {
                    for error in job.errors {
                        #expect(!error.message.contains(base) && !error.message.contains("127.0.0.1"), "\(error.message)")
                        #expect(!["t-ok", "t-flaky", "t-bad", "t-busy", "t-slow"].contains { error.message.contains($0) }, "\(error.message)")
                    }
                }
                #expect(done["slow"]?.state == .failed && done["slow"]?.errors.first?.reason == "timeout")

                // Every request: signed (checked by an independent verifier), with the job and its headers.
                let requests = service.requests
                #expect(requests.count >= 8)
                for request in requests {
                    let valid = IndependentVerifier.verify(
                        secret: serviceSecret, id: request.headers["webhook-id"] ?? "", timestamp: request.headers["webhook-timestamp"] ?? "",
                        signatureHeader: request.headers["webhook-signature"] ?? "", body: request.body)
                    #expect(valid, "request to /\(request.path) is not validly signed")
                    #expect(request.headers["x-token"] == "t-\(request.path)")
                }
                let first = try #require(requests.first { $0.path == "ok" })
                guard case .object(let body)? = JSONValue(json: first.body) else { Issue.record("body is not an object"); return }
                #expect(body["id"] == .string(ids["ok"]!.description) && body["kind"] == .string("svc.ok") && body["attempt"] == .number(1))
                #expect(body["payload"] == .object(["file": .string("ok.ifc")]))
            }
        }
    }

    @Test("spool serve runs a service kind from spool.yaml (${VAR} from the environment) and accepts its jobs; a bad kinds section stops it at start")
    func fromConfigFile() async throws {
        let service = ScriptedService()
        try await service.run { base in
            let dir = TempDir()
            defer { dir.remove() }
            try """
            kinds:
              ifc.convert:
                http: { url: "${SVC}/ok", method: POST, timeout_seconds: 30, headers: { Authorization: "Bearer ${SVC_TOKEN}" } }
              ifc.long:
                http: { url: "${SVC}/later", timeout_seconds: 1 }
              ifc.longfail:
                http: { url: "${SVC}/laterfail" }
            """.write(toFile: dir.file("spool.yaml"), atomically: true, encoding: .utf8)
            let server = try SpoolProcess(["serve", "--database", dir.file("s.sqlite"), "--port", "0", "--config", dir.file("spool.yaml")],
                                          logTo: dir.file("serve.log"), environment: ["SVC": base, "SVC_TOKEN": "s3cret"], directory: dir.path)
            let client = SpoolClient(url: "http://127.0.0.1:\(try await listeningPort(of: server))")
            #expect(await eventually(timeout: .seconds(30)) { (try? await client.queues()) != nil }, "serve did not start:\n\(server.output)")
            let id = JobID(try await client.enqueue(try NewJob(kind: "ifc.convert", payload: ["file": "a.ifc"])).id)!
            #expect(await eventually(timeout: .seconds(30)) { (try? await client.job(id).state) == .completed }, "log:\n\(server.output)")
            let request = try #require(service.requests.first)
            #expect(request.headers["authorization"] == "Bearer s3cret")
            // Signed with the tenant's webhook secret, as receivers get it from the API.
            let secret = try #require(JSONValue(json: try await client.webhookSecretForTests()).flatMap { v -> String? in
                if case .object(let o) = v, case .string(let s)? = o["secret"] { s } else { nil }
            })
            #expect(IndependentVerifier.verify(secret: secret, id: request.headers["webhook-id"] ?? "", timestamp: request.headers["webhook-timestamp"] ?? "",
                                               signatureHeader: request.headers["webhook-signature"] ?? "", body: request.body))

            // 202 and callbacks: the job runs past the kind's 1 s request timeout, shows the
            // service's progress, and ends as the service reports; a forged report is refused.
            let long = JobID(try await client.enqueue(try NewJob(kind: "ifc.long", payload: ["file": "big.ifc"])).id)!
            let longFail = JobID(try await client.enqueue(try NewJob(kind: "ifc.longfail", payload: ["file": "bad.ifc"])).id)!
            #expect(await eventually(timeout: .seconds(20)) { (try? await client.job(long).progress?.message) == "converting" })
            #expect(try await client.job(long).state == .processing)
            let done = try await client.wait(for: long)
            #expect(done.state == .completed && done.result == .object(["converted": .string("later")]) && done.attempt == 1, "\(done)")
            let failed = try await client.wait(for: longFail)
            #expect(failed.state == .failed && failed.attempt == 1 && failed.errors.first?.message == "the model is corrupt", "\(failed)")
            #expect(await eventually(timeout: .seconds(10)) { service.callbackStatuses.withLock { $0.count } == 6 })
            #expect(service.callbackStatuses.withLock { $0.sorted() } == [200, 204, 204, 204, 409, 409], "fail answers 200 with the outcome, complete and progress 204, forged reports 409")
            // The engine recorded nothing more for them (no error of its own, no second attempt).
            #expect(!server.output.contains("lease lost"), "\(server.output)")
            #expect(service.requests.filter { $0.path.hasPrefix("later") }.count == 2, "the service was called more than once per job")

            server.signal(SIGTERM)
            _ = await server.waitForExit(timeout: .seconds(20))

            try "kinds:\n  ifc.convert:\n    http: { url: \"${NOT_SET}/x\" }\n".write(toFile: dir.file("bad.yaml"), atomically: true, encoding: .utf8)
            let bad = try SpoolProcess(["serve", "--database", dir.file("b.sqlite"), "--port", "0", "--config", dir.file("bad.yaml")],
                                       logTo: dir.file("bad.log"), directory: dir.path)
            #expect(await bad.waitForExit(timeout: .seconds(20)) == 1)
            #expect(bad.output.contains("kinds.ifc.convert.http.url") && bad.output.contains("NOT_SET"), "\(bad.output)")

            // A secret with a line break: refused at start, and not shown.
            try "kinds:\n  ifc.convert:\n    http: { url: \"${SVC}/ok\", headers: { Authorization: \"Bearer ${SVC_TOKEN}\" } }\n"
                .write(toFile: dir.file("nl.yaml"), atomically: true, encoding: .utf8)
            let newline = try SpoolProcess(["serve", "--database", dir.file("n.sqlite"), "--port", "0", "--config", dir.file("nl.yaml")],
                                           logTo: dir.file("nl.log"), environment: ["SVC": base, "SVC_TOKEN": "t0ps3cret\n"], directory: dir.path)
            #expect(await newline.waitForExit(timeout: .seconds(20)) == 1)
            #expect(newline.output.contains("kinds.ifc.convert.http.headers.Authorization") && !newline.output.contains("t0ps3cret"), "\(newline.output)")
        }
    }
}

/// The port `spool serve --port 0` chose, from its "HTTP API listening" line.
func listeningPort(of server: SpoolProcess) async throws -> Int {
    var port: Int?
    _ = await eventually(timeout: .seconds(30)) {
        for line in server.output.split(separator: "\n") where line.contains("HTTP API listening") {
            if let range = line.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(line[range].split(separator: ":").last ?? "")
            }
        }
        return port != nil
    }
    return try #require(port, "serve did not start:\n\(server.output)")
}

extension SpoolClient {
    /// `GET /v1/webhooks/secret` (the tests' tenant's signing secret).
    func webhookSecretForTests() async throws -> Data { try await send(.GET, "/v1/webhooks/secret") }
}
