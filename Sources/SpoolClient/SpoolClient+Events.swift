import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import SpoolCore

/// One Server-Sent Event.
public struct ServerSentEvent: Sendable, Hashable {
    public var id: String?
    /// `snapshot`, `state`, `progress`, `pruned`, ... (`message` when the stream names none).
    public var type: String
    public var data: String
}

extension SpoolClient {
    /// The job's events (`GET /v1/jobs/{id}/events`): a snapshot first, then every change, until
    /// the job is finished. A dropped stream is resumed with `Last-Event-ID`, so nothing is
    /// missed or repeated; after 5 failed reconnections in a row the stream throws.
    public func events(of id: JobID) -> AsyncThrowingStream<ServerSentEvent, any Error> {
        serverSentEvents("/v1/jobs/\(id)/events", after: nil, what: "the event stream of job \(id)", endsWith: Self.endsJob)
    }

    /// The event feed (`GET /v1/events`): every job event of the token's tenant (of every
    /// tenant for an admin), optionally of one queue and one kind, from after `after` (an event
    /// id) or from now, for as long as the caller reads. Resumed like ``events(of:)``.
    public func feed(queue: String? = nil, kind: String? = nil, after: Int64? = nil) -> AsyncThrowingStream<ServerSentEvent, any Error> {
        let query = [("queue", queue), ("kind", kind)].compactMap { name, value in value.map { "\(name)=\(Self.escape($0))" } }
        let path = "/v1/events" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        return serverSentEvents(path, after: after.map(String.init), what: "the event feed", endsWith: { _ in false })
    }

    /// Reads a `text/event-stream` at `path`, reconnecting with `Last-Event-ID` until
    /// `endsWith` says an event was the last one (or the caller stops reading).
    private func serverSentEvents(_ path: String, after: String?, what: String,
                                  endsWith: @escaping @Sendable (ServerSentEvent) -> Bool) -> AsyncThrowingStream<ServerSentEvent, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                var lastEventID = after
                var failures = 0
                var finished = false
                do {
                    while !Task.isCancelled && !finished {
                        var request = self.request(path)
                        request.headers.add(name: "Accept", value: "text/event-stream")
                        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: lastEventID) }
                        do {
                            let response = try await http.execute(request, timeout: .hours(24 * 365))
                            guard response.status.code == 200 else {
                                let body = try await response.body.collect(upTo: 1 << 16)
                                throw SpoolClientError(status: Int(response.status.code), problem: Data(buffer: body))
                            }
                            var parser = ServerSentEventParser()
                            for try await chunk in response.body {
                                for event in parser.feed(chunk.readableBytesView) {
                                    if let id = event.id { lastEventID = id }
                                    failures = 0
                                    if endsWith(event) { finished = true }
                                    continuation.yield(event)
                                }
                            }
                        } catch let error as SpoolClientError where !error.isUnavailable {
                            throw error
                        } catch {
                            failures += 1
                            if failures > 5 {
                                throw SpoolClientError(status: 0, type: "unreachable", detail: "lost \(what): \(SpoolClientError.unreachable(baseURL, error).detail)")
                            }
                        }
                        if finished { break }
                        // The stream ended early (a gateway restart, or this client fell behind): resume.
                        try await Task.sleep(for: .milliseconds(200 * (failures + 1)))
                    }
                    continuation.finish()
                } catch { continuation.finish(throwing: error) }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Whether `event` says the job is finished (a snapshot or a state change to a final state)
    /// or gone (deleted).
    static func endsJob(_ event: ServerSentEvent) -> Bool {
        guard case .object(let o)? = JSONValue(json: Data(event.data.utf8)) else { return false }
        if event.type == "deleted" || o["type"] == .string("deleted") { return true }
        guard event.type == "snapshot" || event.type == "state", case .string(let s)? = o["state"],
              let state = JobState(rawValue: s) else { return false }
        return state.isFinished
    }
}

/// Splits a `text/event-stream` body into events as chunks arrive.
public struct ServerSentEventParser: Sendable {
    /// Bytes of an event not complete yet (decoded only whole: a character may span chunks).
    private var pending: [UInt8] = []

    public init() {}

    /// The events completed by `chunk` (keep-alive comments are skipped).
    public mutating func feed<Bytes: Sequence>(_ chunk: Bytes) -> [ServerSentEvent] where Bytes.Element == UInt8 {
        pending.append(contentsOf: chunk)
        var events: [ServerSentEvent] = []
        var start = 0
        var i = 0
        while i + 1 < pending.count {
            guard pending[i] == 0x0A && pending[i + 1] == 0x0A else { i += 1; continue }
            if let event = Self.event(String(decoding: pending[start..<i], as: UTF8.self)) { events.append(event) }
            i += 2
            start = i
        }
        pending.removeFirst(start)
        return events
    }

    public mutating func feed(_ chunk: String) -> [ServerSentEvent] { feed(Array(chunk.utf8)) }

    private static func event(_ frame: String) -> ServerSentEvent? {
        var event = ServerSentEvent(id: nil, type: "message", data: "")
        for line in frame.split(separator: "\n") {
            if line.hasPrefix("data: ") { event.data += line.dropFirst(6) }
            else if line.hasPrefix("event: ") { event.type = String(line.dropFirst(7)) }
            else if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)) }
        }
        return event.data.isEmpty ? nil : event
    }
}
