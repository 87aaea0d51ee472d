import Crypto
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import SpoolCore
import SpoolGateway
import SpoolWebhooks
import Synchronization
import Testing

/// Verifies a webhook the way the Standard Webhooks specification describes it, written from
/// the specification and sharing no code with the sender: the signed content is
/// `msg_id.timestamp.payload`; the key is the base64 part of the `whsec_` secret; the
/// signature header is a space-separated list of `v1,<base64>`; the timestamp must be within
/// five minutes.
enum IndependentVerifier {
    static func verify(secret: String, id: String, timestamp: String, signatureHeader: String, body: Data, now: Date = Date()) -> Bool {
        guard secret.hasPrefix("whsec_"), let key = Data(base64Encoded: String(secret.dropFirst(6))) else { return false }
        guard let ts = Double(timestamp), abs(now.timeIntervalSince1970 - ts) <= 300 else { return false }
        var content = Data()
        content.append(contentsOf: Array(id.utf8))
        content.append(UInt8(ascii: "."))
        content.append(contentsOf: Array(timestamp.utf8))
        content.append(UInt8(ascii: "."))
        content.append(body)
        let expected = Data(HMAC<SHA256>.authenticationCode(for: content, using: SymmetricKey(data: key)))
        for entry in signatureHeader.split(separator: " ") {
            let parts = entry.split(separator: ",", maxSplits: 1)
            guard parts.count == 2, parts[0] == "v1", let given = Data(base64Encoded: String(parts[1])) else { continue }
            // Constant-time comparison.
            guard given.count == expected.count else { continue }
            var diff: UInt8 = 0
            for (a, b) in zip(given, expected) { diff |= a ^ b }
            if diff == 0 { return true }
        }
        return false
    }
}

/// A webhook receiver on a loopback port that answers with scripted status codes and keeps
/// every request it got.
final class WebhookReceiver: Sendable {
    struct Received: Sendable {
        var headers: [String: String]
        /// The `Host` header (HTTP/1.1), which HTTPTypes keeps apart from the other fields.
        var authority: String?
        var body: Data
        var answered: Int
    }
    let received = Mutex<[Received]>([])
    private let script: Mutex<[Int]>
    private let host: String
    private let port: Int

    /// Answers the codes of `script` in turn, then 200; listens on `host` (a loopback
    /// address) and `port` (0: any free one).
    init(script: [Int], host: String = "127.0.0.1", port: Int = 0) {
        self.script = Mutex(script)
        self.host = host
        self.port = port
    }

    var requests: [Received] { received.withLock { $0 } }

    /// Runs the receiver while `body` runs; passes its URL.
    func run(_ body: (String) async throws -> Void) async throws {
        let router = Router()
        router.post("hook") { request, _ -> Response in
            let bytes = try await request.body.collect(upTo: 1 << 20)
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            let code = self.script.withLock { $0.isEmpty ? 200 : $0.removeFirst() }
            self.received.withLock { $0.append(Received(headers: headers, authority: request.head.authority, body: Data(buffer: bytes), answered: code)) }
            return Response(status: .init(code: code))
        }
        try await withLoopbackServer(router, host: host, port: port, name: "receiver") { port in
            try await body("http://\(host):\(port)/hook")
        }
    }
}

/// Serves `router` on `host` and `port` (0: any free one) while `body` runs; passes the port.
func withLoopbackServer(_ router: Router<BasicRequestContext>, host: String = "127.0.0.1", port: Int = 0, name: String,
                        _ body: (Int) async throws -> Void) async throws {
    var logger = Logger(label: name)
    logger.logLevel = .warning
    let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
    let app = Application(router: router, configuration: .init(address: .hostname(host, port: port)),
                          onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) }, logger: logger)
    let group = ServiceGroup(services: [app], logger: logger)
    // Ends the stream when the server stops, so that a failed bind ends the wait below.
    let running = Task { defer { continuation.finish() }; try await group.run() }
    var iterator = ports.makeAsyncIterator()
    guard let bound = await iterator.next() else {
        _ = try? await running.value
        throw GatewayError("the \(name) did not start on \(host):\(port)")
    }
    do { try await body(bound) } catch {
        await group.triggerGracefulShutdown()
        _ = try? await running.value
        throw error
    }
    await group.triggerGracefulShutdown()
    try await running.value
}

@Suite("Webhooks", .serialized)
struct WebhookTests {
    static func loopbackAllowed() -> WebhookConfiguration {
        var config = WebhookConfiguration()
        config.policy.allowLoopback = true
        return config
    }

    /// Retries of webhook deliveries after 50 ms instead of seconds.
    static func fastWebhooks(_ config: inout EngineConfiguration) {
        var q = Webhook.queueConfiguration
        q.backoff = Backoff(initial: .milliseconds(50), multiplier: 1, max: .milliseconds(50), jitter: 0)
        config.queues[Webhook.queue] = q
    }

    @Test("a receiver answering 500, 500, 200 gets one signed delivery after retries, visible at /deliveries")
    func retriesUntilDelivered() async throws {
        let receiver = WebhookReceiver(script: [500, 500])
        try await receiver.run { url in
            try await TestGateway.with(webhooks: Self.loopbackAllowed(), engine: Self.fastWebhooks) { gw in
                let accepted = try await gw.post("/v1/jobs", #"{"kind": "demo.noop", "callback_url": "\#(url)"}"#)
                #expect(accepted.status == 202, "\(String(decoding: accepted.body, as: UTF8.self))")
                let id = try #require(accepted.string("id"))
                #expect(try await eventually(timeout: .seconds(20)) { receiver.requests.contains { $0.answered == 200 } })
                // Nothing more arrives after the success.
                try await Task.sleep(for: .milliseconds(300))
                let requests = receiver.requests
                #expect(requests.map(\.answered) == [500, 500, 200])

                let secretDoc = try await gw.get("/v1/webhooks/secret")
                let secret = try #require(secretDoc.string("secret"))
                #expect(secret.hasPrefix("whsec_"))
                let webhookIDs = Set(requests.compactMap { $0.headers["webhook-id"] })
                #expect(webhookIDs.count == 1, "every retry carries the same webhook-id")
                for request in requests {
                    let ok = IndependentVerifier.verify(
                        secret: secret, id: request.headers["webhook-id"] ?? "", timestamp: request.headers["webhook-timestamp"] ?? "",
                        signatureHeader: request.headers["webhook-signature"] ?? "", body: request.body)
                    #expect(ok, "signature of \(request.headers) does not verify")
                    // A different secret must not verify (the check can fail).
                    #expect(!IndependentVerifier.verify(
                        secret: Webhook.makeSecret(), id: request.headers["webhook-id"] ?? "", timestamp: request.headers["webhook-timestamp"] ?? "",
                        signatureHeader: request.headers["webhook-signature"] ?? "", body: request.body))
                    guard case .object(let envelope)? = JSONValue(json: request.body), case .object(let data)? = envelope["data"] else {
                        Issue.record("the body is not an envelope with data"); continue
                    }
                    #expect(envelope["type"] == .string("job.completed"))
                    #expect(data["id"] == .string(id) && data["state"] == .string("completed"))
                }
                // The delivery record: three attempts, delivered.
                #expect(try await eventually(timeout: .seconds(20)) {
                    let d = try await gw.get("/v1/jobs/\(id)/deliveries")
                    return d.status == 200 && String(decoding: d.body, as: UTF8.self).contains("\"delivered\"")
                })
                let deliveries = try await gw.get("/v1/jobs/\(id)/deliveries")
                guard case .array(let list)? = deliveries["deliveries"], list.count == 1, case .object(let delivery) = list[0],
                      case .array(let attempts)? = delivery["attempts"] else {
                    Issue.record("unexpected deliveries document: \(String(decoding: deliveries.body, as: UTF8.self))"); return
                }
                #expect(delivery["status"] == .string("delivered") && delivery["event"] == .string("job.completed"))
                #expect(delivery["id"] == .string(webhookIDs.first ?? ""))
                let codes = attempts.compactMap { a -> Double? in
                    if case .object(let o) = a { return o["status_code"]?.doubleValue }
                    return nil
                }
                #expect(codes == [500, 500, 200])
                for attempt in attempts {
                    if case .object(let o) = attempt { #expect((o["duration_ms"]?.doubleValue ?? -1) >= 0) }
                }
            }
        }
    }

    @Test("failed and cancelled jobs are announced too; jobs without a callback URL are not")
    func failedAndCancelled() async throws {
        let receiver = WebhookReceiver(script: [])
        try await receiver.run { url in
            try await TestGateway.with(webhooks: Self.loopbackAllowed(), engine: Self.fastWebhooks) { gw in
                let failing = try await gw.post("/v1/jobs", #"{"kind": "demo.flaky", "payload": {"fail_times": 5}, "max_attempts": 1, "callback_url": "\#(url)"}"#)
                let delayed = try await gw.post("/v1/jobs", #"{"kind": "demo.noop", "run_at": "\#(Timestamp.format(Date().addingTimeInterval(3600)))", "callback_url": "\#(url)"}"#)
                #expect(failing.status == 202 && delayed.status == 202, "\(String(decoding: failing.body, as: UTF8.self))")
                let cancelled = try await gw.post("/v1/jobs/\(delayed.string("id") ?? "")/cancel", "{}")
                #expect(cancelled.status == 200)
                _ = try await gw.post("/v1/jobs", #"{"kind": "demo.noop"}"#)
                #expect(try await eventually(timeout: .seconds(20)) { receiver.requests.count >= 2 })
                try await Task.sleep(for: .milliseconds(300))
                let types = Set(receiver.requests.compactMap { r -> String? in
                    if case .object(let o)? = JSONValue(json: r.body), case .string(let t)? = o["type"] { return t }
                    return nil
                })
                #expect(types == ["job.failed", "job.cancelled"])
                #expect(receiver.requests.count == 2)
            }
        }
    }

    @Test("callback URLs on private or loopback addresses are refused unless allowed")
    func privateAddressesRefused() async throws {
        let receiver = WebhookReceiver(script: [])
        try await receiver.run { url in
            // Default policy: public addresses only.
            try await TestGateway.with(engine: Self.fastWebhooks) { gw in
                for target in ["http://10.1.2.3/hook", "http://192.168.0.10/hook", "http://169.254.169.254/latest/meta-data",
                               "http://[::1]:8080/hook", "http://localhost/hook", "http://[fd00::1]/hook", url] {
                    let answer = try await gw.post("/v1/jobs", #"{"kind": "demo.noop", "callback_url": "\#(target)"}"#)
                    #expect(answer.status == 422, "\(target) was not refused")
                    #expect(answer.problemType == "urn:spool:problem:validation")
                    #expect(String(decoding: answer.body, as: UTF8.self).contains("callback_url"))
                }
                for (body, field) in [(#"{"kind": "spool.webhook", "payload": {"url": "unix://x/var/run/docker.sock"}}"#, "kind"),
                                      (#"{"queue": "spool.webhooks", "kind": "demo.noop"}"#, "queue")] {
                    let reserved = try await gw.post("/v1/jobs", body)
                    #expect(reserved.status == 422 && String(decoding: reserved.body, as: UTF8.self).contains(field), "\(body)")
                }
                let publicURL = try await gw.post("/v1/jobs", #"{"kind": "demo.noop", "run_at": "\#(Timestamp.format(Date().addingTimeInterval(3600)))", "callback_url": "https://example.com/hook"}"#)
                #expect(publicURL.status == 202)

                // A job enqueued from Swift, past the gateway: the delivery checks again and gives up.
                let job = try await gw.spool.enqueue(NewJob(kind: "demo.noop", callbackURL: url)).job
                #expect(try await eventually(timeout: .seconds(20)) {
                    try await gw.store.webhookDeliveries(of: job.id, tenant: nil).first?.status == "gave_up"
                })
                let delivery = try #require(try await gw.store.webhookDeliveries(of: job.id, tenant: nil).first)
                #expect(delivery.attempts.count == 1 && delivery.attempts[0].error?.contains("loopback") == true)
                #expect(receiver.requests.isEmpty)
            }
        }
    }

    /// Counts the lookups of a test resolver.
    final class Lookups: Sendable {
        let names = Mutex<[String]>([])
        var count: Int { names.withLock { $0.count } }
        /// Records a lookup of `name`; returns how many there were, this one included.
        func record(_ name: String) -> Int { names.withLock { $0.append(name); return $0.count } }
    }

    @Test("DNS rebinding: the delivery connects to the address that was checked, not to a second answer")
    func rebindingPinnedToCheckedAddress() async throws {
        // Receiver A on 127.0.0.2:P, receiver B on 127.0.0.1:P. The system resolver says
        // localhost is 127.0.0.1 (B); the test resolver answers 127.0.0.2 (A) first and
        // 127.0.0.1 afterwards, as a rebinding DNS server would. Only A may be reached.
        for _ in 1...5 {
            var ran = false
            let a = WebhookReceiver(script: [], host: "127.0.0.2")
            try await a.run { urlA in
                let port = try #require(URL(string: urlA)?.port)
                let b = WebhookReceiver(script: [], host: "127.0.0.1", port: port)
                do {
                    try await b.run { _ in
                        ran = true
                        try await Self.expectPinned(a: a, b: b, port: port)
                    }
                } catch where !ran {
                    return  // port P is taken on 127.0.0.1: try another one
                }
            }
            if ran { return }
        }
        Issue.record("could not listen on one port on both 127.0.0.2 and 127.0.0.1")
    }

    private static func expectPinned(a: WebhookReceiver, b: WebhookReceiver, port: Int) async throws {
        let lookups = Lookups()
        var config = loopbackAllowed()
        config.resolver = { name in
            [IPAddress(lookups.record(name) == 1 ? "127.0.0.2" : "127.0.0.1")!]
        }
        try await TestGateway.with(webhooks: config, engine: fastWebhooks) { gw in
            let job = try await gw.spool.enqueue(NewJob(kind: "demo.noop", callbackURL: "http://localhost:\(port)/hook")).job
            #expect(try await eventually(timeout: .seconds(20)) {
                try await gw.store.webhookDeliveries(of: job.id, tenant: nil).first?.state?.isFinished == true
            })
            try await Task.sleep(for: .milliseconds(200))
            let delivery = try #require(try await gw.store.webhookDeliveries(of: job.id, tenant: nil).first)
            #expect(delivery.status == "delivered", "\(delivery.attempts)")
            #expect(a.requests.count == 1, "the checked address got \(a.requests.count) requests")
            #expect(a.requests.first?.authority == "localhost:\(port)", "Host header: \(a.requests.first?.authority ?? "none")")
            #expect(b.requests.isEmpty, "the second answer got \(b.requests.count) requests")
            #expect(lookups.names.withLock { $0 } == ["localhost"], "one lookup per attempt")
            #expect(lookups.count == delivery.attempts.count)
        }
    }

    @Test("an answer with any refused address refuses the delivery before connecting anywhere")
    func refusedAnswerRefusesDelivery() async throws {
        // 169.254.169.254 and 127.0.0.2 are never connected to: a receiver listens on
        // 127.0.0.2, and the refused address comes second, after an allowed one.
        let cases: [(allowLoopback: Bool, answers: [String], refused: String)] = [
            (true, ["127.0.0.2", "169.254.169.254"], "169.254.169.254"),
            (false, ["127.0.0.2"], "127.0.0.2"),
        ]
        for (allowLoopback, answers, refused) in cases {
            let receiver = WebhookReceiver(script: [], host: "127.0.0.2")
            try await receiver.run { url in
                let port = try #require(URL(string: url)?.port)
                let lookups = Lookups()
                var config = WebhookConfiguration()
                config.policy.allowLoopback = allowLoopback
                config.resolver = { name in
                    _ = lookups.record(name)
                    return answers.map { IPAddress($0)! }
                }
                try await TestGateway.with(webhooks: config, engine: Self.fastWebhooks) { gw in
                    let job = try await gw.spool.enqueue(NewJob(kind: "demo.noop", callbackURL: "http://callback.invalid:\(port)/hook")).job
                    #expect(try await eventually(timeout: .seconds(20)) {
                        try await gw.store.webhookDeliveries(of: job.id, tenant: nil).first?.state?.isFinished == true
                    })
                    let delivery = try #require(try await gw.store.webhookDeliveries(of: job.id, tenant: nil).first)
                    #expect(delivery.state == .failed && delivery.status == "gave_up", "\(answers)")
                    #expect(delivery.attempts.count == 1)
                    let error = delivery.attempts.first?.error ?? ""
                    #expect(error.contains(refused) && error.contains("callback.invalid"), "attempt error: \(error)")
                    #expect(lookups.names.withLock { $0 } == ["callback.invalid"])
                    #expect(receiver.requests.isEmpty)
                }
            }
        }
    }

    @Test("address classification")
    func addressScopes() throws {
        let policy = CallbackAddressPolicy()
        for refused in ["2130706433", "0x7f.1", "127.1", "017700000001", "::127.0.0.1", "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.1.1", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"] {
            #expect(policy.refusal(for: IPAddress(refused)!) != nil, "\(refused) should be refused")
        }
        for allowed in ["8.8.8.8", "172.32.0.1", "93.184.216.34", "2606:4700::1111"] {
            #expect(policy.refusal(for: IPAddress(allowed)!) == nil, "\(allowed) should be allowed")
        }
        #expect(CallbackAddressPolicy(allowLoopback: true).refusal(for: IPAddress("127.0.0.1")!) == nil)
        #expect(CallbackAddressPolicy(allowLoopback: true).refusal(for: IPAddress("10.0.0.1")!) != nil)
        #expect(throws: CallbackRefused.self) { try policy.resolve("localhost") }
        #expect(throws: CallbackRefused.self) { try policy.resolve("localhost.") }
        #expect(policy.checkLiteral("http://2130706433/hook") != nil)

        // Every answer of a lookup is checked, whatever its place; allowed answers keep their order.
        let publicPair = [IPAddress("93.184.216.34")!, IPAddress("2606:4700::1111")!]
        #expect(try policy.resolve("hook.example", using: { _ in publicPair }) == publicPair)
        #expect(throws: CallbackRefused.self) { try policy.resolve("hook.example", using: { _ in publicPair + [IPAddress("10.0.0.1")!] }) }
        #expect(throws: CallbackRefused.self) { try policy.resolve("hook.example", using: { _ in [IPAddress("169.254.169.254")!] + publicPair }) }
        #expect(throws: CallbackRefused.self) { try policy.resolve("hook.example", using: { _ in [] }) }
        // Literal addresses are not looked up.
        #expect(try policy.resolve("8.8.8.8", using: { _ in Issue.record("looked up a literal"); return [] }) == [IPAddress("8.8.8.8")!])
    }
}
