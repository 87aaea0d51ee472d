import Foundation
import Logging
import Metrics

/// What the writes of one store transaction changed, for the store to record before it commits:
/// the moves between states (for the per-queue counts), the job events, and the signals to
/// raise once committed. Every store builds one per transaction; it is not shared between tasks.
public final class ChangeSet {
    public struct CountKey: Hashable, Sendable {
        public var queue: String
        public var tenant: String
        public var state: JobState
        @inlinable
        public init(queue: String, tenant: String, state: JobState) { self.queue = queue; self.tenant = tenant; self.state = state }
    }

    /// What identifies a job in its events.
    public struct JobKey: Sendable {
        public var id: JobID
        public var queue: String
        public var tenant: String
        public var kind: String
        public var attempt: Int
        @inlinable
        public init(id: JobID, queue: String, tenant: String, kind: String, attempt: Int) {
            self.id = id; self.queue = queue; self.tenant = tenant; self.kind = kind; self.attempt = attempt
        }
        @inlinable
        public init(_ job: Job) {
            self.init(id: job.id, queue: job.queue, tenant: job.tenant, kind: job.kind, attempt: job.attempt)
        }
    }

    public var signals: Set<StoreSignals.Signal> = []
    public var counts: [CountKey: Int] = [:]
    /// Events of this transaction, numbered by the store when written.
    public var events: [JobEvent] = []

    public init() {}

    /// Records a state change (`nil`: created or deleted): the counts move and a `state` event
    /// (or `deleted`) is written with the transaction.
    @inlinable
    public func transition(_ job: JobKey, from: JobState?, to: JobState?, error: AttemptError? = nil, result: Data? = nil) {
        move(queue: job.queue, tenant: job.tenant, from: from, to: to)
        events.append(JobEvent(
            type: to == nil ? .deleted : .state, jobID: job.id, tenant: job.tenant, queue: job.queue, kind: job.kind,
            state: to, attempt: job.attempt, error: error, result: result))
    }

    @inlinable
    public func progress(_ job: JobKey, _ progress: JobProgress) {
        events.append(JobEvent(type: .progress, jobID: job.id, tenant: job.tenant, queue: job.queue, kind: job.kind,
                               state: .processing, attempt: job.attempt, progress: progress))
    }

    @inlinable
    public func signal(_ s: StoreSignals.Signal) { signals.insert(s) }

    /// Records that `count` jobs of `queue` moved from `from` to `to` (`nil`: created or deleted).
    @inlinable
    public func move(queue: String, tenant: String, from: JobState?, to: JobState?, count: Int = 1) {
        if from == to { return }
        if let from { counts[CountKey(queue: queue, tenant: tenant, state: from), default: 0] -= count }
        if let to { counts[CountKey(queue: queue, tenant: tenant, state: to), default: 0] += count }
    }

    /// The change in waiting jobs (pending + scheduled) of `queue` not yet written.
    @inlinable
    public func waitingDelta(queue: String) -> Int {
        counts.reduce(0) { $0 + ($1.key.queue == queue && $1.key.state.isQueued ? $1.value : 0) }
    }

    /// Count changes that are not zero, in a stable order (stores that lock count rows take
    /// them in this order, so two transactions never wait for each other in a cycle).
    public var nonZeroCounts: [(CountKey, Int)] {
        counts.filter { $0.value != 0 }.sorted { ($0.key.queue, $0.key.tenant, $0.key.state.rawValue) < ($1.key.queue, $1.key.tenant, $1.key.state.rawValue) }
            .map { ($0.key, $0.value) }
    }
}

/// How job events are stored: a JSON array per committed transaction (one row per commit, not
/// per event). An event's `seq` is `row << 16 | index`, so seqs only grow as rows do.
public enum EventLogFormat {
    /// Events per row.
    public static let perRow = 1 << 16

    public static func seq(row: Int64, index: Int) -> Int64 { row << 16 | Int64(index) }
    public static func row(of seq: Int64) -> Int64 { seq >> 16 }

    /// The events as one row's JSON array. Names (tenant, queue, kind) are validated to
    /// `[A-Za-z0-9_.:-]` and ids are hex, so only progress and error messages need escaping.
    @inlinable
    public static func encode(_ events: ArraySlice<JobEvent>) -> String {
        var text = "["
        for (n, event) in events.enumerated() {
            if n > 0 { text += "," }
            append(event, to: &text)
        }
        return text + "]"
    }

    @usableFromInline
    static func append(_ event: JobEvent, to text: inout String) {
        text += "{\"j\":\"\(event.jobID)\",\"t\":\"\(event.tenant)\",\"q\":\"\(event.queue)\",\"k\":\"\(event.kind)\""
        text += ",\"y\":\"\(event.type.rawValue)\",\"a\":\(event.attempt),\"at\":\(micros(event.at))"
        if let state = event.state { text += ",\"s\":\"\(state.rawValue)\"" }
        if let p = event.progress {
            text += ",\"p\":\(p.percent)"
            if let m = p.message { text += ",\"m\":" + quoted(m) }
        }
        if let e = event.error, let json = try? JSON.encode(e) { text += ",\"e\":" + String(decoding: json, as: UTF8.self) }
        if let r = event.result { text += ",\"r\":" + String(decoding: r, as: UTF8.self) }
        text += "}"
    }

    @usableFromInline
    static func quoted(_ s: String) -> String {
        (try? JSON.encode(s)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
    }

    @usableFromInline
    static func micros(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1e6).rounded()) }

    /// The stored form, decoded.
    private struct Stored: Decodable {
        var j: String, t: String, q: String, k: String, y: String, a: Int, at: Int64
        var s: String?, p: Double?, m: String?, e: AttemptError?, r: JSONValue?
    }

    /// One element of a row, decoded if it can be: a bad element costs only itself.
    private struct Lenient: Decodable {
        var stored: Stored?
        init(from decoder: any Decoder) throws { stored = try? Stored(from: decoder) }
    }

    /// The events of one row, numbered. Never throws: a row or an event that cannot be decoded
    /// (written by a damaged or foreign writer) is skipped, logged and counted in
    /// `spool_event_log_undecodable_total`, so that one bad row cannot stall a reader that
    /// would otherwise retry it forever.
    public static func decode(row: Int64, text: String) -> [JobEvent] {
        guard let elements = try? JSON.decode([Lenient].self, from: Data(text.utf8)) else {
            undecodable(row: row, what: "the whole row")
            return []
        }
        var events: [JobEvent] = []
        events.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            guard let e = element.stored, let id = JobID(e.j), let type = JobEvent.Kind(rawValue: e.y) else {
                undecodable(row: row, what: "event \(index)")
                continue
            }
            events.append(JobEvent(
                seq: seq(row: row, index: index), type: type, jobID: id, tenant: e.t, queue: e.q, kind: e.k,
                state: e.s.flatMap(JobState.init(rawValue:)), attempt: e.a,
                progress: e.p.map { JobProgress(percent: $0, message: e.m) }, error: e.e,
                result: e.r.map(\.jsonData), at: Date(timeIntervalSince1970: Double(e.at) / 1e6)))
        }
        return events
    }

    private static let logger = Logger(label: "spool.events")

    private static func undecodable(row: Int64, what: String) {
        Counter(label: "spool_event_log_undecodable_total").increment()
        logger.error("skipped an event-log entry that cannot be decoded", metadata: ["row": "\(row)", "entry": "\(what)"])
    }
}

extension Job {
    /// The job a store writes for `request`: a new id, `pending` (or `scheduled` when
    /// `runAt` is in the future), and the queue's defaults for what the request leaves out.
    public init(new request: NewJob, defaults: JobDefaults?, now: Date) {
        let d = defaults ?? JobDefaults(QueueConfiguration())
        let runAt = request.runAt ?? now
        self.init(
            id: JobID.make(now: now), tenant: request.tenant, queue: request.queue, kind: request.kind,
            payload: request.payload, priority: request.priority,
            state: runAt > now ? .scheduled : .pending, attempt: 0,
            maxAttempts: request.maxAttempts ?? d.maxAttempts, runAt: runAt,
            timeout: request.timeout ?? d.timeout, createdAt: now,
            idempotencyKey: request.idempotencyKey, callbackURL: request.callbackURL, tags: request.tags)
    }
}

extension NewJob {
    /// Whether an existing job was made from this same request (for idempotency keys): same
    /// queue, kind, priority, batch and payload (as JSON, whatever its spacing and key order).
    public func isSameRequest(as job: Job) -> Bool {
        guard job.queue == queue && job.kind == kind && job.priority == priority && job.batchID == batchID else { return false }
        if job.payload == payload { return true }
        guard let a = JSONValue(json: job.payload), let b = JSONValue(json: payload) else { return false }
        return a == b
    }
}
