import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import SpoolCore

/// One client on `GET /v1/ws`: a small JSON protocol over text frames.
///
/// Client to server:
/// - `{"type": "subscribe", "jobs": ["<id>", …], "queues": ["<name>", …], "after": <seq>?}`:
///   adds to what the client follows. Each job gets a `snapshot` first (its status document and
///   the `seq` it is current to); with `after`, the stored events since then are replayed instead.
/// - `{"type": "unsubscribe", "jobs": […], "queues": […]}`
/// - `{"type": "ping", "id": <any>?}`: answered by `{"type": "pong", "id": <same>}`.
///
/// Server to client: `{"type": "subscribed", "jobs": […], "queues": […]}` (the whole selection
/// after each change), `{"type": "snapshot", "seq": n, "job": {…}}`,
/// `{"type": "event", "event": {…}}` (the same event documents as the SSE streams), and
/// `{"type": "error", "error": "<code>", "detail": "…"}`, and `{"type": "pruned", "pruned": {…}}`
/// when a resume's `after` is older than the stored events. A client too slow to keep up gets an
/// error `too_slow` and is closed; it reconnects and subscribes again with `after`.
struct WebSocketSession {
    /// The subprotocol clients offer; the server selects it.
    static let subprotocol = "spool.v1"
    /// A subprotocol entry `spool.bearer.<token>` carries the token for browsers.
    static let bearerPrefix = "spool.bearer."
    static let maxJobs = 10_000
    static let maxQueues = 100

    let gateway: Gateway
    let principal: Principal

    /// Close codes of a refused connection, after HTTP's 401 and 403.
    static let unauthorizedCode: UInt16 = 4401
    static let forbiddenCode: UInt16 = 4403

    init(gateway: Gateway, principal: Principal) {
        self.gateway = gateway
        self.principal = principal
    }

    /// Runs a session for the upgraded connection, or closes it with 4401 (no valid token) or
    /// 4403 (the token lacks the `read` scope) and a reason.
    static func serve(gateway: Gateway, context: SpoolRequestContext, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        guard let principal = context.principal else {
            return try await outbound.close(.unknown(unauthorizedCode), reason: "unauthorized: a valid API token is required")
        }
        guard principal.scopes.contains(.read) || principal.isAdmin else {
            return try await outbound.close(.unknown(forbiddenCode), reason: "forbidden: the token lacks the 'read' scope")
        }
        try await WebSocketSession(gateway: gateway, principal: principal).run(inbound: inbound, outbound: outbound)
    }

    /// Selects the subprotocol when the client offered it. A caller without a valid token
    /// (or without the `read` scope) is upgraded too, and closed at once by ``serve(gateway:context:inbound:outbound:)``:
    /// a close code and reason reach every client, browsers included, where a refused
    /// handshake is a bare 400 that browsers do not even show. (Upgrades from other sites were
    /// refused before this, by ``CrossSiteGuard``.)
    @Sendable static func shouldUpgrade(_ request: Request, _ context: SpoolRequestContext) async throws -> RouterShouldUpgrade {
        let offered = request.headers[values: .secWebSocketProtocol].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
        return offered.contains(subprotocol) ? .upgrade([.secWebSocketProtocol: subprotocol]) : .upgrade([:])
    }

    private enum Input: Sendable {
        /// A client message; resume `ack` once handled, so a client cannot queue up work
        /// faster than it is done.
        case message(String, ack: CheckedContinuation<Void, Never>)
        case event(JobEvent)
        case overflowed
        case end
    }

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        var filter = EventFilter(tenant: principal.tenantFilter, jobIDs: [], queues: [])
        let subscription = gateway.events.subscribe(filter, buffer: gateway.configuration.eventBuffer)
        let (inputs, feed) = AsyncStream.makeStream(of: Input.self)
        let reader = Task {
            do {
                for try await message in inbound.messages(maxSize: 1 << 16) {
                    let text: String
                    if case .text(let t) = message { text = t } else { text = "" }
                    await withCheckedContinuation { ack in
                        if case .terminated = feed.yield(.message(text, ack: ack)) { ack.resume() }
                    }
                }
            } catch {}
            feed.yield(.end)
        }
        let forwarder = Task {
            for await event in subscription.events { feed.yield(.event(event)) }
            feed.yield(subscription.overflowed ? .overflowed : .end)
        }
        var sent = SentEvents()
        var failure: (any Error)?
        var iterator = inputs.makeAsyncIterator()
        loop: while let input = await iterator.next() {
            do {
                switch input {
                case .event(let event):
                    subscription.consumed()
                    if sent.alreadySent(event) { continue }
                    try await send(outbound, ["type": "event", "event": event.document])
                case .message(let text, let ack):
                    defer { ack.resume() }
                    try await handle(text, filter: &filter, sent: &sent, subscription: subscription, outbound: outbound)
                case .overflowed:
                    try? await send(outbound, error: "too_slow", "the connection fell more than \(gateway.configuration.eventBuffer) events behind; reconnect and subscribe with 'after'")
                    try? await outbound.close(.policyViolation, reason: "too slow")
                    break loop
                case .end:
                    break loop
                }
            } catch {
                failure = error
                break loop
            }
        }
        subscription.cancel()
        reader.cancel()
        forwarder.cancel()
        feed.finish()
        // A reader waiting for its message to be handled is let go.
        while let input = await iterator.next() {
            if case .message(_, let ack) = input { ack.resume() }
        }
        if let failure { throw failure }
    }

    private func handle(_ text: String, filter: inout EventFilter, sent: inout SentEvents,
                        subscription: EventHub.Subscription, outbound: WebSocketOutboundWriter) async throws {
        guard let value = JSONValue(json: Data(text.utf8)), case .object(let message) = value, case .string(let type)? = message["type"] else {
            return try await send(outbound, error: "bad_message", "send JSON objects with a 'type': subscribe, unsubscribe or ping")
        }
        switch type {
        case "ping":
            try await send(outbound, ["type": "pong", "id": message["id"] ?? .null])
        case "subscribe", "unsubscribe":
            let jobs: [JobID], queues: Set<String>
            switch selection(message) {
            case .success(let chosen): (jobs, queues) = chosen
            case .failure(let problem): return try await send(outbound, error: "bad_message", problem.detail)
            }
            if type == "unsubscribe" {
                filter.jobIDs?.subtract(jobs)
                filter.queues?.subtract(queues)
                for id in jobs { sent.floors[id] = nil }
                subscription.update { $0 = filter }
                return try await sendSelection(outbound, filter)
            }
            var after: Int64?
            if let raw = message["after"] {
                guard let n = raw.doubleValue, let seq = Int64(exactly: n), seq >= 0 else {
                    return try await send(outbound, error: "bad_message", "'after' must be the seq of an event")
                }
                after = seq
            }
            // Look the jobs up (another tenant's job looks missing), then subscribe before reading
            // snapshots so that nothing happens unseen in between.
            var found: [JobID] = []
            for id in jobs {
                if try await gateway.spool.job(id, tenant: principal.tenantFilter) != nil { found.append(id) } else {
                    try await send(outbound, error: "not_found", "job \(id) not found", ["job_id": .string(id.description)])
                }
            }
            let added = EventFilter(tenant: principal.tenantFilter, jobIDs: Set(found), queues: queues)
            filter.jobIDs?.formUnion(found)
            filter.queues?.formUnion(queues)
            guard (filter.jobIDs?.count ?? 0) <= Self.maxJobs, (filter.queues?.count ?? 0) <= Self.maxQueues else {
                filter.jobIDs?.subtract(found)
                filter.queues?.subtract(queues)
                return try await send(outbound, error: "too_many", "at most \(Self.maxJobs) jobs and \(Self.maxQueues) queues per connection")
            }
            subscription.update { $0 = filter }
            let store = gateway.spool.store
            if let after {
                // The stored events since `after` (live ones that arrive meanwhile are not sent
                // twice); then, for jobs, a snapshot in case the log no longer held them all.
                let pruned = try await store.prunedEventSeq()
                if after < pruned {
                    try await send(outbound, ["type": "pruned", "pruned": EventReplay.prunedNotice(after: after, prunedThrough: pruned)])
                }
                // The client has what came before `after`; then each page, once sent.
                sent.cover(added, through: after)
                var replay = EventReplay(store: store, filter: added, after: after)
                while let events = try await replay.next() {
                    for event in events where !sent.alreadySent(event, live: false) {
                        try await send(outbound, ["type": "event", "event": event.document])
                    }
                    sent.cover(added, through: replay.position)
                }
            }
            let seq = try await store.lastEventSeq()
            for id in found {
                guard let job = try await gateway.spool.job(id, tenant: principal.tenantFilter) else { continue }
                sent.floors[id] = max(sent.floors[id] ?? 0, seq)
                let document = (try? JSONValue(json: JSON.encode(JobDocument(job)))) ?? .null
                try await send(outbound, ["type": "snapshot", "seq": .integer(seq), "job": document])
            }
            try await sendSelection(outbound, filter)
        default:
            try await send(outbound, error: "bad_message", "unknown message type '\(type.prefix(40))'")
        }
    }

    /// What this connection has sent, so that a replay and the live feed never repeat an event.
    struct SentEvents {
        /// Per job, the seq its snapshot was current to: older live events are stale.
        var floors: [JobID: Int64] = [:]
        /// Ranges already covered: every event matching `filter` up to `through` was sent by a
        /// replay, or the client had it (a resume's `after`). Small: one entry per subscribe.
        private var covered: [(filter: EventFilter, through: Int64)] = []

        mutating func cover(_ filter: EventFilter, through: Int64) {
            covered.append((filter, through))
        }

        /// Whether `event` went out already. `live`: the event comes from the live feed, in seq
        /// order, so ranges it has passed can be forgotten.
        mutating func alreadySent(_ event: JobEvent, live: Bool = true) -> Bool {
            if let floor = floors[event.jobID], event.seq <= floor { return true }
            if live { covered.removeAll { event.seq > $0.through } }
            return covered.contains { event.seq <= $0.through && $0.filter.matches(event) }
        }
    }

    /// Why a selection is refused (the first bad entry, named).
    struct BadSelection: Error { var detail: String }

    private func selection(_ message: [String: JSONValue]) -> Result<([JobID], Set<String>), BadSelection> {
        var jobs: [JobID] = []
        var queues: Set<String> = []
        if let raw = message["jobs"] {
            guard case .array(let items) = raw else { return .failure(BadSelection(detail: "'jobs' must be an array of job ids")) }
            for (index, item) in items.enumerated() {
                guard case .string(let s) = item, let id = JobID(s.lowercased()) else {
                    let shown = if case .string(let s) = item { "'\(s.prefix(64))'" } else { "a value that is not a string" }
                    return .failure(BadSelection(detail: "jobs[\(index)]: \(shown) is not a job id (a UUID such as 0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b)"))
                }
                jobs.append(id)
            }
        }
        if let raw = message["queues"] {
            guard case .array(let items) = raw else { return .failure(BadSelection(detail: "'queues' must be an array of queue names")) }
            for (index, item) in items.enumerated() {
                guard case .string(let s) = item, NewJob.isValidName(s) else {
                    return .failure(BadSelection(detail: "queues[\(index)]: not a queue name (1-64 characters of A-Z a-z 0-9 _ . - :)"))
                }
                queues.insert(s)
            }
        }
        return .success((jobs, queues))
    }

    private func sendSelection(_ outbound: WebSocketOutboundWriter, _ filter: EventFilter) async throws {
        let jobs = (filter.jobIDs ?? []).map(\.description).sorted().map(JSONValue.string)
        let queues = (filter.queues ?? []).sorted().map(JSONValue.string)
        try await send(outbound, ["type": "subscribed", "jobs": .array(jobs), "queues": .array(queues)])
    }

    private func send(_ outbound: WebSocketOutboundWriter, error code: String, _ detail: String, _ extra: [String: JSONValue] = [:]) async throws {
        var message: [String: JSONValue] = ["type": "error", "error": .string(code), "detail": .string(detail)]
        message.merge(extra) { a, _ in a }
        try await send(outbound, message)
    }

    private func send(_ outbound: WebSocketOutboundWriter, _ message: [String: JSONValue]) async throws {
        try await outbound.write(.text(String(decoding: JSONValue.object(message).jsonData, as: UTF8.self)))
    }
}
