import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import SpoolCore
import SpoolWebhooks

/// A job kind that calls a downstream HTTP service, declared in the config file (no worker
/// code): the job goes to `url` as a signed JSON request and the answer decides its fate.
///
/// - 2xx with a JSON body, or none: completed; the body is the result.
/// - 408, 409, 425, 429, 5xx, a timeout, a connection error: the attempt failed, and is retried
///   with the queue's backoff (or after the answer's `Retry-After`).
/// - Any other 4xx: failed for good (the request itself is wrong).
///
/// A long-running service answers `202 Accepted` and finishes later: the request carries the
/// attempt's `lease_token` and `callbacks` (the gateway's URLs to report `progress`, `complete`
/// or `fail`, authenticated by that token), and the job stays running, its lease kept alive,
/// until the service reports or the job's timeout passes (the worker's slot is freed meanwhile,
/// and a restart of the worker does not call the service again).
///
/// The URL is the operator's, so private and loopback addresses are allowed (unlike callback
/// URLs, which come from API callers). Redirects are not followed. The request is cancelled
/// with the attempt (job cancelled, timed out, lease lost).
public struct HTTPServiceKind: Sendable {
    public var kind: String
    public var url: String
    /// `POST` (the default) or `PUT`.
    public var method: HTTPMethod
    /// The longest one request may take; the job's own timeout bounds it too.
    public var timeout: Duration?
    public var headers: [(name: String, value: String)]

    /// Answers longer than this fail the attempt.
    public static let maxResponseBytes = 1 << 20
    /// How much of an error answer's body is kept on the job.
    public static let errorExcerptBytes = 500

    public init(kind: String, url: String, method: HTTPMethod = .POST, timeout: Duration? = nil, headers: [(name: String, value: String)] = []) {
        self.kind = kind; self.url = url; self.method = method; self.timeout = timeout; self.headers = headers
    }

    /// The body sent: who the job is and its payload.
    struct Request: Encodable {
        var id: String
        var kind: String
        var queue: String
        var tenant: String
        var attempt: Int
        var max_attempts: Int
        var payload: JSONValue
        /// Proves the service's reports (callbacks) come from whoever got this attempt.
        var lease_token: String
        /// The latest the job may finish (its timeout), for a service that answers 202.
        var deadline: String
        var callbacks: Callbacks?
        /// The job's parents and their results (absent when it has none).
        var parents: [ParentDocument]?
    }

    struct Callbacks: Encodable {
        var progress: String
        var complete: String
        var fail: String
    }

    /// The handler to register; `secret(tenant)` gives the signing secret (the webhook one).
    /// Without `callbacks`, a 202 answer fails the attempt (there is nowhere to report to).
    public func handler(client: HTTPClient, callbacks: ServiceCallbacks? = nil,
                        secret: @escaping @Sendable (String) async throws -> String) -> AnyJobHandler {
        AnyJobHandler(kind: kind) { payload, context in
            try await call(payload, context: context, client: client, callbacks: callbacks, secret: secret)
        }
    }

    func call(_ payload: Data, context: JobContext, client: HTTPClient, callbacks: ServiceCallbacks?,
              secret: @Sendable (String) async throws -> String) async throws -> Data? {
        let job = context.job
        let base = callbacks?.baseURL.map { "\($0)/v1/service/jobs/\(job.id)" }
        let deadline = (job.startedAt ?? Date()).addingTimeInterval(job.timeout.seconds)
        let body = try JSON.encode(Request(id: job.id.description, kind: job.kind, queue: job.queue, tenant: job.tenant,
                                           attempt: job.attempt, max_attempts: job.maxAttempts,
                                           payload: JSONValue(json: payload) ?? .null,
                                           lease_token: context.lease.value, deadline: Timestamp.format(deadline),
                                           callbacks: base.map { Callbacks(progress: "\($0)/progress", complete: "\($0)/complete", fail: "\($0)/fail") },
                                           parents: context.parents.isEmpty ? nil : context.parents.map(ParentDocument.init)))
        let messageID = "\(job.id)-\(job.attempt)"
        let timestamp = Int64(Date().timeIntervalSince1970)
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        request.headers.replaceOrAdd(name: "User-Agent", value: "Spool/1")
        request.headers.replaceOrAdd(name: "webhook-id", value: messageID)
        request.headers.replaceOrAdd(name: "webhook-timestamp", value: String(timestamp))
        request.headers.replaceOrAdd(name: "webhook-signature",
                                     value: try WebhookSignature.sign(id: messageID, timestamp: timestamp, body: body, secret: try await secret(job.tenant)))
        request.body = .bytes(ByteBuffer(data: body))
        let limit = min(timeout ?? job.timeout, job.timeout)

        // The whole exchange, body included, within the limit (the client's own deadline ends
        // with the response head). Errors name neither the URL nor the headers: they are kept
        // on the job, which its tenant reads, and the operator's URL and tokens are not theirs.
        let (response, answer): (HTTPClientResponse, ByteBuffer)
        let prepared = request, kind = self.kind
        do {
            (response, answer) = try await withTimeLimit(limit, "\(kind): the service did not answer within \(limit.seconds)s") {
                // (The client's deadline a little later than ours, so that a timeout reads the same.)
                let response = try await client.execute(prepared, timeout: .nanoseconds(Int64((limit.seconds + 5) * 1e9)))
                do {
                    return (response, try await response.body.collect(upTo: Self.maxResponseBytes))
                } catch is NIOTooManyBytesError {
                    throw ServiceKindError("\(kind): the service answered \(response.status.code) with a body over \(Self.maxResponseBytes) bytes")
                }
            }
        } catch let error as ServiceKindError {
            throw error
        } catch let error as AttemptTimedOut {
            throw error
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw ServiceKindError("\(kind): the request to the service failed: \(Self.describe(error))")
        }
        let status = Int(response.status.code)
        let excerpt = String(decoding: answer.readableBytesView.prefix(Self.errorExcerptBytes), as: UTF8.self)
        switch status {
        case 202:
            // The service took the job and reports later, through the callbacks.
            guard base != nil else {
                throw ServiceKindError("\(kind): the service answered 202 (it will report later), but this process has no address "
                    + "for its reports: set gateway.public_url")
            }
            throw HandedOff(until: deadline)
        case 200..<300:
            if answer.readableBytes == 0 { return nil }
            let data = Data(buffer: answer)
            guard JSONValue(json: data) != nil else {
                throw JobFailure.nonRetryable("\(kind): the service answered \(status) with a body that is not JSON: \(excerpt)")
            }
            return data
        case 300..<400, 408, 409, 425, 429, 500...:
            // (3xx: redirects are not followed; a maintenance redirect passes, so it is retried.)
            let message = "\(kind): the service answered \(status): \(excerpt)"
            if let after = response.headers.first(name: "Retry-After").flatMap(Self.retryAfter) {
                throw JobFailure.retry(message, after: .seconds(fractional: min(after, 86_400)))
            }
            throw ServiceKindError(message)
        default:
            throw JobFailure.nonRetryable("\(kind): the service answered \(status) (not retried): \(excerpt)")
        }
    }

    /// Seconds from a `Retry-After` value: a number of seconds or an HTTP date.
    static func retryAfter(_ value: String) -> Double? {
        let text = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(text) { return seconds >= 0 ? seconds : nil }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text).map { max(0, $0.timeIntervalSinceNow) }
    }

    /// An error of the exchange, without addresses, URLs or header values.
    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return error.shortDescription }
        if let error = error as? IOError { return "I/O error (errno \(error.errnoCode))" }
        return "\(type(of: error))"
    }

    /// Checks a configured header: a token name, a value without control characters.
    public static func checkHeader(name: String, value: String) -> String? {
        let tokenCharacters = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        if name.isEmpty || !name.allSatisfy(tokenCharacters.contains) { return "is not a valid header name" }
        if value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) {
            return "has a control character (a line break?) in its value"
        }
        return nil
    }

    /// The HTTP client for service kinds: no redirects, connections kept alive.
    public static func makeClient() -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(10))
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }
}

/// A failed attempt of a service or command kind (retried while attempts are left).
public struct ServiceKindError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
