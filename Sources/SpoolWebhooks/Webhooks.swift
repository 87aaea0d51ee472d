import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SpoolCore

/// Signs webhook requests as the Standard Webhooks specification says
/// (https://www.standardwebhooks.com): `webhook-signature: v1,<base64 HMAC-SHA256>` over
/// `"<webhook-id>.<webhook-timestamp>.<body>"`, keyed with the base64-decoded part of the
/// tenant's `whsec_` secret.
public enum WebhookSignature {
    /// The `webhook-signature` header value for one request.
    public static func sign(id: String, timestamp: Int64, body: Data, secret: String) throws -> String {
        let key = SymmetricKey(data: try keyBytes(secret))
        var message = Data("\(id).\(timestamp).".utf8)
        message.append(body)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: key)
        return "v1," + Data(mac).base64EncodedString()
    }

    static func keyBytes(_ secret: String) throws -> Data {
        let encoded = secret.hasPrefix("whsec_") ? String(secret.dropFirst(6)) : secret
        guard let key = Data(base64Encoded: encoded), !key.isEmpty else {
            throw WebhookConfigurationError("a webhook secret must be 'whsec_' followed by base64")
        }
        return key
    }
}

public struct WebhookConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Settings of webhook delivery.
public struct WebhookConfiguration: Sendable {
    /// Which addresses callback URLs may reach.
    public var policy = CallbackAddressPolicy()
    /// Signing secrets per tenant (`whsec_…`), overriding the ones the store makes.
    public var secrets: [String: String] = [:]
    /// The longest one request may take before it counts as failed.
    public var requestTimeout: Duration = .seconds(10)
    /// Looks a callback host name up: every address it answers, preferred first. Called once
    /// per delivery attempt, on a Dispatch thread (it may block); ``policy`` then checks every
    /// answer, and the attempt connects to the first one. The system resolver unless replaced
    /// (tests replace it to play a DNS server).
    public var resolver: @Sendable (String) throws -> [IPAddress] = { try IPAddress.lookup($0) }

    public init() {}
}

/// Runs delivery jobs (kind ``Webhook/kind``): POSTs the job's status document, signed, to its
/// callback URL, records the attempt, and lets the engine retry with backoff until a 2xx.
///
/// Register it with ``Spool/register(_:)-(AnyJobHandler)`` (``handler``); the worker then also
/// works the ``Webhook/queue`` queue.
public final class WebhookDeliverer: Sendable {
    public let configuration: WebhookConfiguration
    private let store: any JobStore
    private let logger: Logger

    public init(store: any JobStore, configuration: WebhookConfiguration = .init(), logger: Logger = Logger(label: "spool.webhooks")) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
    }

    /// Nothing left to stop: every attempt shuts its own HTTP client down when it ends. Kept
    /// so that callers need not know.
    public func shutdown() async throws {}

    /// The HTTP client settings of one attempt. `dnsOverride` maps the URL's host name to the
    /// address the policy checked: the client connects there and resolves nothing, and still
    /// sends the host name as `Host` header and as TLS server name (and checks the certificate
    /// against it).
    static func httpConfiguration(dnsOverride: [String: String]) -> HTTPClient.Configuration {
        var http = HTTPClient.Configuration()
        http.redirectConfiguration = .disallow  // a redirect could lead past the address policy
        http.timeout = .init(connect: .seconds(5), read: .seconds(10))
        http.dnsOverride = dnsOverride
        return http
    }

    /// The handler to register with the engine.
    public var handler: AnyJobHandler {
        AnyJobHandler(kind: Webhook.kind) { [self] data, context in
            let payload: Webhook.Payload
            do { payload = try JSON.decode(Webhook.Payload.self, from: data) } catch {
                throw JobFailure.nonRetryable("bad delivery payload: \(error)")
            }
            return try await deliver(payload, context: context)
        }
    }

    /// The secret a tenant's webhooks are signed with.
    public func secret(tenant: String) async throws -> String {
        if let configured = configuration.secrets[tenant] { return configured }
        return try await store.webhookSecret(tenant: tenant)
    }

    private func deliver(_ payload: Webhook.Payload, context: JobContext) async throws -> Data? {
        let delivery = context.job
        let started = ContinuousClock.now
        let at = Date()
        func record(_ status: Int?, _ error: String?) async {
            let ms = (ContinuousClock.now - started).seconds * 1000
            let attempt = WebhookAttempt(attempt: delivery.attempt, at: at, statusCode: status, durationMs: (ms * 100).rounded() / 100, error: error)
            do { try await store.recordWebhookAttempt(attempt, delivery: delivery.id) } catch {
                logger.warning("could not record a webhook attempt", metadata: ["delivery": "\(delivery.id)", "error": "\(error)"])
            }
        }

        var document = payload.data ?? payload.job.flatMap { (try? JSON.encode($0)).flatMap { JSONValue(json: $0) } }
        if document == nil, let jobID = JobID(payload.job_id), let job = try await store.job(jobID, tenant: delivery.tenant) {
            document = (try? JSON.encode(JobDocument(job))).flatMap { JSONValue(json: $0) }
        }
        guard let document else {
            await record(nil, "job \(payload.job_id) no longer exists")
            throw JobFailure.nonRetryable("job \(payload.job_id) no longer exists")
        }
        guard let url = URL(string: payload.url), url.scheme == "http" || url.scheme == "https",
              let host = url.host?.trimmingCharacters(in: CharacterSet(charactersIn: "[]")) else {
            await record(nil, "not an http or https URL: \(payload.url)")
            throw JobFailure.nonRetryable("not an http or https URL: \(payload.url)")
        }
        // Resolve once, check every answer, and connect to a checked address: the name is
        // not resolved again between the check and the connection.
        let address: IPAddress
        do {
            let addresses = try await configuration.policy.resolveOffThread(host, using: configuration.resolver)
            guard let first = addresses.first else { throw CallbackRefused("\(host) does not resolve") }
            address = first
        } catch {
            await record(nil, "\(error)")
            throw JobFailure.nonRetryable("callback URL refused: \(error)")
        }
        // A host the HTTP client takes for an address (as `inet_pton` reads it) is connected
        // to as it is; any other, names and IPv4 forms like `127.1` alike, would be resolved
        // by the client, so it is pinned to the checked address (written bare, IPv6 too).
        let pinned = (try? SocketAddress(ipAddress: host, port: 0)) == nil
        let dnsOverride = pinned ? [host: address.description] : [:]
        let target = pinned ? "\(address) (\(host))" : host

        let timestamp = Int64(Date().timeIntervalSince1970)
        let body = try Self.body(event: payload.event, job: document, timestamp: timestamp)
        let signature = try WebhookSignature.sign(id: delivery.id.description, timestamp: timestamp, body: body,
                                                  secret: try await secret(tenant: delivery.tenant))
        var request = HTTPClientRequest(url: payload.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "Spool-Webhooks/1")
        request.headers.add(name: "webhook-id", value: delivery.id.description)
        request.headers.add(name: "webhook-timestamp", value: String(timestamp))
        request.headers.add(name: "webhook-signature", value: signature)
        request.body = .bytes(ByteBuffer(bytes: body))

        // A client of its own for this attempt (dnsOverride is per client), on the shared
        // event loops; shut down on every path, after the body is read.
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: Self.httpConfiguration(dnsOverride: dnsOverride))
        let outcome: Result<(status: Int, headers: HTTPHeaders), any Error>
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(Int64(configuration.requestTimeout.seconds * 1e9)))
            _ = try? await response.body.collect(upTo: 64 * 1024)  // drain; receivers' bodies are not kept
            outcome = .success((Int(response.status.code), response.headers))
        } catch {
            outcome = .failure(error)
        }
        do { try await client.shutdown() } catch {
            logger.debug("could not shut a webhook HTTP client down", metadata: ["error": "\(error)"])
        }
        let status: Int, headers: HTTPHeaders
        switch outcome {
        case .success(let answer): (status, headers) = answer
        case .failure(let error):
            await record(nil, "request to \(target) failed: \(error)")
            throw WebhookDeliveryError("request to \(payload.url) at \(target) failed: \(error)")
        }
        if (200..<300).contains(status) {
            await record(status, nil)
            return try JSON.encode(["status_code": status])
        }
        await record(status, "receiver answered \(status)")
        // 410 Gone: the receiver says the endpoint will never take it.
        if status == 410 { throw JobFailure.nonRetryable("receiver answered 410 Gone") }
        if status == 429 || status == 503, let seconds = headers.first(name: "Retry-After").flatMap(Double.init), seconds > 0 {
            throw JobFailure.retry("receiver answered \(status)", after: .seconds(fractional: min(seconds, 3600)))
        }
        throw WebhookDeliveryError("receiver answered \(status)")
    }

    /// The request body: `{"type": "job.completed", "timestamp": "...", "data": <status document>}`.
    static func body(event: String, job: JSONValue, timestamp: Int64) throws -> Data {
        struct Envelope: Encodable {
            var type: String
            var timestamp: String
            var data: JSONValue
        }
        return try JSON.encode(Envelope(type: event, timestamp: Timestamp.format(Date(timeIntervalSince1970: Double(timestamp))), data: job))
    }
}

struct WebhookDeliveryError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
