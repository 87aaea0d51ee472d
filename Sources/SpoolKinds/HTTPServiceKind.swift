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
    }

    /// The handler to register; `secret(tenant)` gives the signing secret (the webhook one).
    public func handler(client: HTTPClient, secret: @escaping @Sendable (String) async throws -> String) -> AnyJobHandler {
        AnyJobHandler(kind: kind) { payload, context in
            try await call(payload, context: context, client: client, secret: secret)
        }
    }

    func call(_ payload: Data, context: JobContext, client: HTTPClient,
              secret: @Sendable (String) async throws -> String) async throws -> Data? {
        let job = context.job
        let body = try JSON.encode(Request(id: job.id.description, kind: job.kind, queue: job.queue, tenant: job.tenant,
                                           attempt: job.attempt, max_attempts: job.maxAttempts,
                                           payload: JSONValue(json: payload) ?? .null))
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

        let response: HTTPClientResponse
        let answer: ByteBuffer
        do {
            response = try await client.execute(request, timeout: .nanoseconds(Int64(limit.seconds * 1e9)))
            do {
                answer = try await response.body.collect(upTo: Self.maxResponseBytes)
            } catch is NIOTooManyBytesError {
                throw ServiceKindError("\(kind): the service answered \(response.status.code) with a body over \(Self.maxResponseBytes) bytes")
            }
        } catch let error as ServiceKindError {
            throw error
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw ServiceKindError("\(kind): request to \(url) failed: \(error)")
        }
        let status = Int(response.status.code)
        let excerpt = String(decoding: answer.readableBytesView.prefix(Self.errorExcerptBytes), as: UTF8.self)
        switch status {
        case 200..<300:
            if answer.readableBytes == 0 { return nil }
            let data = Data(buffer: answer)
            guard JSONValue(json: data) != nil else {
                throw JobFailure.nonRetryable("\(kind): the service answered \(status) with a body that is not JSON: \(excerpt)")
            }
            return data
        case 408, 409, 425, 429, 500...:
            let message = "\(kind): the service answered \(status): \(excerpt)"
            if let after = response.headers.first(name: "Retry-After").flatMap(Double.init), after >= 0 {
                throw JobFailure.retry(message, after: .seconds(fractional: min(after, 86_400)))
            }
            throw ServiceKindError(message)
        default:
            throw JobFailure.nonRetryable("\(kind): the service answered \(status) (not retried): \(excerpt)")
        }
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
