import Foundation
import HTTPTypes
import Hummingbird
import ServiceLifecycle
import SpoolCore
import Synchronization

/// Server-Sent Events: `GET /v1/jobs/{id}/events` follows one job to its end;
/// `GET /v1/events?queue=&kind=` is a live feed of every event the caller may see.
/// Both resume after `Last-Event-ID` without loss or repeat (from the stored events).
struct EventRoutes {
    let gateway: Gateway

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.get("jobs/:id/events", use: jobEvents)
        api.get("events", use: feed)
    }

    @Sendable func jobEvents(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.read)
        let id = try context.jobIDParameter()
        let resumeAfter = try lastEventID(request)
        let filter = EventFilter(tenant: principal.tenantFilter, jobIDs: [id])
        // Subscribe before reading, so that nothing happens unseen between the two.
        let subscription = gateway.events.subscribe(filter, buffer: gateway.configuration.eventBuffer)
        let snapshot: Job?
        let snapshotSeq: Int64
        let pruned: Int64
        do {
            snapshotSeq = try await gateway.spool.store.lastEventSeq()
            snapshot = try await gateway.spool.job(id, tenant: principal.tenantFilter)
            pruned = resumeAfter == nil ? 0 : try await gateway.spool.store.prunedEventSeq()
        } catch {
            subscription.cancel()
            throw error
        }
        guard let snapshot else {
            subscription.cancel()
            throw Problem.notFound("job \(id) not found")
        }
        guard let resumeAfter else {
            // A new stream: the job as it is now, then what happens next.
            return stream(subscription, filter: filter, replayFrom: nil) { send in
                try await send.snapshot(snapshot, seq: snapshotSeq)
                return snapshot.state.isFinished
            }
        }
        if resumeAfter < pruned {
            // Some of the missed events are gone: say so, then the job as it is now.
            return stream(subscription, filter: filter, replayFrom: snapshotSeq) { send in
                send.notice("pruned", seq: pruned, EventReplay.prunedNotice(after: resumeAfter, prunedThrough: pruned))
                try await send.snapshot(snapshot, seq: snapshotSeq)
                return snapshot.state.isFinished
            }
        }
        return stream(subscription, filter: filter, replayFrom: resumeAfter, afterReplay: { send in
            if !snapshot.state.isFinished { return false }
            // Finished, but its terminal event was not replayed (seen already, or pruned):
            // end with the job as it is.
            if snapshotSeq > resumeAfter { try await send.snapshot(snapshot, seq: snapshotSeq) }
            return true
        })
    }

    @Sendable func feed(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.read)
        let query = request.uri.queryParameters
        if let queue = query["queue"] { try NewJob.validateQueue(String(queue)) }
        let filter = EventFilter(tenant: principal.tenantFilter, queues: query["queue"].map { [String($0)] }, kind: query["kind"].map(String.init))
        let resumeAfter = try lastEventID(request)
        let pruned = resumeAfter == nil ? 0 : try await gateway.spool.store.prunedEventSeq()
        let subscription = gateway.events.subscribe(filter, buffer: gateway.configuration.eventBuffer)
        return stream(subscription, filter: filter, replayFrom: resumeAfter, endsAtTerminal: false) { send in
            if let resumeAfter, resumeAfter < pruned {
                send.notice("pruned", seq: pruned, EventReplay.prunedNotice(after: resumeAfter, prunedThrough: pruned))
            }
            return false
        }
    }

    /// `Last-Event-ID`, or the `last_event_id` query parameter (for clients that cannot set
    /// headers); each is checked when given, and the header wins.
    private func lastEventID(_ request: Request) throws -> Int64? {
        func parse(_ raw: String?, _ name: String) throws -> Int64? {
            guard let raw else { return nil }
            guard let seq = Int64(raw), seq >= 0 else { throw Problem.validation(name, "must be the id of an event") }
            return seq
        }
        let query = try parse(request.uri.queryParameters["last_event_id"].map(String.init), "last_event_id")
        return try parse(request.headers[.lastEventID], "Last-Event-ID") ?? query
    }

    /// Writes events as `text/event-stream`: first what `start` sends (a snapshot or a notice;
    /// it returns whether the story already ended), then every stored event after
    /// `replayFrom`, page by page until the log's end, then what `afterReplay` sends, then live
    /// events, with keep-alive comments. The live subscription was made before any of it, and
    /// the sender skips what it sent already: no gap and no repeat at the hand-over.
    private func stream(
        _ subscription: EventHub.Subscription, filter: EventFilter, replayFrom: Int64?, endsAtTerminal: Bool = true,
        start: @escaping @Sendable (EventSender) async throws -> Bool = { _ in false },
        afterReplay: @escaping @Sendable (EventSender) async throws -> Bool = { _ in false }
    ) -> Response {
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .init("X-Accel-Buffering")!: "no"]
        let store = gateway.spool.store
        let keepAlive = gateway.configuration.keepAlive
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            let (items, feed) = AsyncStream.makeStream(of: StreamItem.self)
            let forward = Task {
                for await event in subscription.events { feed.yield(.event(event)) }
                feed.yield(.closed)
            }
            let pinger = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: keepAlive)
                    feed.yield(.ping)
                }
            }
            defer {
                subscription.cancel()
                forward.cancel()
                pinger.cancel()
                feed.finish()
            }
            // On graceful shutdown the stream ends, in the replay or live (the client resumes
            // elsewhere with Last-Event-ID), instead of holding the process up.
            let shuttingDown = Atomic<Bool>(false)
            try await withGracefulShutdownHandler {
                let sender = EventSender(endsAtTerminal: endsAtTerminal)
                // The client has everything up to where it resumes (a gateway whose feed is
                // behind another's must not send those again).
                if let replayFrom { sender.skip(through: replayFrom) }
                var done = try await start(sender)
                try await writer.write(contentsOf: sender.take())
                if !done, let replayFrom {
                    var replay = EventReplay(store: store, filter: filter, after: replayFrom)
                    pages: while !shuttingDown.load(ordering: .relaxed), let events = try await replay.next() {
                        for event in events where try await sender(event) {
                            done = true
                            break
                        }
                        try await writer.write(contentsOf: sender.take())
                        if done { break pages }
                    }
                    if !done {
                        done = try await afterReplay(sender)
                        try await writer.write(contentsOf: sender.take())
                    }
                }
                var iterator = items.makeAsyncIterator()
                while !done {
                    guard let item = await iterator.next() else { break }
                    switch item {
                    case .event(let event):
                        subscription.consumed()
                        done = try await sender(event)
                        try await writer.write(contentsOf: sender.take())
                    case .ping:
                        try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    case .closed:
                        // The hub dropped us (too slow), or the server is shutting down: the
                        // client resumes with Last-Event-ID.
                        done = true
                    }
                }
            } onGracefulShutdown: {
                shuttingDown.store(true, ordering: .relaxed)
                feed.yield(.closed)
            }
            try await writer.finish(nil)
        })
    }

    enum StreamItem: Sendable {
        case event(JobEvent)
        case ping
        case closed
    }
}

/// Formats events for one stream, skipping any it has sent already (replay and live overlap).
final class EventSender: @unchecked Sendable {
    private var buffers: [ByteBuffer] = []
    private var lastSeq: Int64 = 0
    let endsAtTerminal: Bool

    init(endsAtTerminal: Bool) { self.endsAtTerminal = endsAtTerminal }

    /// Queues `event` unless already sent; returns whether the stream should end after it.
    func callAsFunction(_ event: JobEvent) async throws -> Bool {
        guard event.seq > lastSeq else { return false }
        lastSeq = event.seq
        buffers.append(Self.frame(id: event.seq, type: event.type.rawValue, data: event.document))
        return endsAtTerminal && event.isTerminal
    }

    /// The job as it is now, as the first event of a stream.
    func snapshot(_ job: Job, seq: Int64) async throws {
        lastSeq = max(lastSeq, seq)
        guard case .object(var document) = (try? JSONValue(json: JSON.encode(JobDocument(job)))) ?? .null else { return }
        document["seq"] = .number(Double(seq))
        buffers.append(Self.frame(id: seq, type: "snapshot", data: .object(document)))
    }

    /// Treats every event up to `seq` as sent.
    func skip(through seq: Int64) { lastSeq = max(lastSeq, seq) }

    /// A notice that is not a job event (for example `pruned`), with `seq` as its id.
    func notice(_ type: String, seq: Int64, _ data: JSONValue) {
        lastSeq = max(lastSeq, seq)
        buffers.append(Self.frame(id: seq, type: type, data: data))
    }

    func take() -> [ByteBuffer] {
        defer { buffers = [] }
        return buffers
    }

    static func frame(id: Int64, type: String, data: JSONValue) -> ByteBuffer {
        var text = "id: \(id)\nevent: \(type)\ndata: "
        text += String(decoding: data.jsonData, as: UTF8.self)
        text += "\n\n"
        return ByteBuffer(string: text)
    }
}

extension HTTPField.Name {
    static let lastEventID = Self("Last-Event-ID")!
}
