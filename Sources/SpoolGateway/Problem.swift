import Foundation
import HTTPTypes
import Hummingbird
import SpoolCore

/// An error answered as an RFC 9457 problem document (`application/problem+json`).
///
/// `type` is a stable URN clients can switch on; `title` is short and fixed per type;
/// `detail` explains this occurrence.
public struct Problem: Error, HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var type: String
    public var title: String
    public var detail: String
    /// Seconds for `Retry-After` (429 and 503).
    public var retryAfter: Int?
    /// Extra members of the document (for example the existing job of an idempotency conflict).
    public var extra: [String: String] = [:]
    /// Headers of the response besides the content type (for example `Allow`).
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, type: String, title: String, detail: String, retryAfter: Int? = nil,
                extra: [String: String] = [:], headers: HTTPFields = [:]) {
        self.status = status
        self.type = "urn:spool:problem:" + type
        self.title = title
        self.detail = detail
        self.retryAfter = retryAfter
        self.extra = extra
        self.headers = headers
    }

    /// The type without its `urn:spool:problem:` prefix (`lease-lost`).
    public var shortType: String { String(type.dropFirst("urn:spool:problem:".count)) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var document: [String: JSONValue] = [
            "type": .string(type), "title": .string(title), "status": .number(Double(status.code)),
            "detail": .string(detail), "instance": .string(request.uri.path),
        ]
        for (key, value) in extra { document[key] = .string(value) }
        var headers = self.headers
        headers[.contentType] = "application/problem+json"
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: JSONValue.object(document).jsonData)))
    }

    // MARK: The problems the API answers

    static func malformed(_ detail: String) -> Problem {
        Problem(.badRequest, type: "malformed-json", title: "The body is not valid JSON", detail: detail)
    }
    static func validation(_ field: String, _ reason: String) -> Problem {
        Problem(.unprocessableContent, type: "validation", title: "The request is not valid", detail: "\(field): \(reason)", extra: ["field": field])
    }
    static let unauthorized = Problem(.unauthorized, type: "unauthorized", title: "Authentication required",
                                      detail: "send a valid API token as 'Authorization: Bearer <token>'",
                                      headers: [.wwwAuthenticate: #"Bearer realm="spool""#])
    static func forbidden(_ scope: Scope) -> Problem {
        Problem(.forbidden, type: "forbidden", title: "The token lacks a scope", detail: "this operation needs the '\(scope.rawValue)' scope")
    }
    static func notFound(_ what: String) -> Problem {
        Problem(.notFound, type: "not-found", title: "Not found", detail: what)
    }
    static func tooLarge(_ limit: Int) -> Problem {
        Problem(.contentTooLarge, type: "too-large", title: "The body is too large", detail: "the limit is \(limit) bytes")
    }
    static let unsupportedMediaType = Problem(.unsupportedMediaType, type: "unsupported-media-type", title: "The body must be JSON",
                                              detail: "send 'Content-Type: application/json'")

    /// The problem for an error of the engine or the store.
    static func from(_ error: SpoolError) -> Problem {
        switch error {
        case let .invalid(field, reason):
            return validation(field, reason)
        case .notFound(let id):
            return notFound("job \(id) not found")
        case let .invalidTransition(_, from, operation):
            return Problem(.conflict, type: "invalid-transition", title: "The job's state does not allow this",
                           detail: error.description, extra: ["state": from.rawValue, "operation": operation])
        case let .idempotencyConflict(_, existing):
            return Problem(.conflict, type: "idempotency-conflict", title: "The idempotency key was used for a different request",
                           detail: error.description, extra: ["existing_job": existing.description])
        case let .queueFull(queue, _, retryAfter):
            return Problem(.tooManyRequests, type: "queue-full", title: "The queue is full", detail: error.description,
                           retryAfter: max(1, Int(retryAfter.seconds.rounded(.up))), extra: ["queue": queue])
        case .leaseLost:
            return Problem(.conflict, type: "lease-lost", title: "The lease is no longer held", detail: error.description)
        case .unavailable:
            return Problem(.serviceUnavailable, type: "unavailable", title: "The store is unavailable",
                           detail: error.description, retryAfter: 1)
        case .batchNotFound, .notFoundNamed:
            return notFound(error.description)
        case .conflict:
            return Problem(.conflict, type: "conflict", title: "The resource's state does not allow this", detail: error.description)
        }
    }

    /// Any error thrown by a route: problems pass through, engine errors are mapped, anything
    /// else is a 500 whose detail does not leak internals.
    static func wrap(_ error: any Error) -> any Error {
        switch error {
        case let problem as Problem: problem
        case let spool as SpoolError: from(spool)
        case let http as HTTPError where http.status == .notFound:
            Problem(.notFound, type: "no-route", title: "No such endpoint", detail: "see /v1/openapi.json for the endpoints")
        case let http as HTTPError where http.status == .contentTooLarge:
            Problem(.contentTooLarge, type: "too-large", title: "The body is too large", detail: http.body ?? "the body is over the limit")
        case let http as HTTPError:
            Problem(http.status, type: "http-\(http.status.code)", title: http.status.reasonPhrase, detail: http.body ?? http.status.reasonPhrase)
        case is HTTPResponseError: error
        default: Problem(.internalServerError, type: "internal", title: "Internal error", detail: "the server failed to handle the request; see its log")
        }
    }
}

extension HTTPField.Name {
    static let idempotencyKey = Self("Idempotency-Key")!
    static let idempotentReplayed = Self("Idempotent-Replayed")!
}
