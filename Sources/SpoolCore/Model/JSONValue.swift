import Foundation

/// Any JSON value. Payloads and results are stored as JSON text; this type carries them inside
/// documents (the status document, API bodies) without a schema.
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    /// A whole number that fits 64 bits, kept exact (ids above 2^53 must survive).
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .integer(i) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else if let o = try? c.decode([String: JSONValue].self) { self = .object(o) }
        else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value") }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .integer(let i): try c.encode(i)
        case .number(let n):
            if n.rounded() == n, abs(n) < 1e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Numbers compare by value, whichever case holds them.
    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case let (.bool(x), .bool(y)): x == y
        case let (.integer(x), .integer(y)): x == y
        case let (.number(x), .number(y)): x == y
        case let (.integer(x), .number(y)), let (.number(y), .integer(x)): Double(x) == y
        case let (.string(x), .string(y)): x == y
        case let (.array(x), .array(y)): x == y
        case let (.object(x), .object(y)): x == y
        default: false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .null: hasher.combine(0)
        case .bool(let b): hasher.combine(b)
        case .integer(let i): hasher.combine(Double(i))
        case .number(let n): hasher.combine(n)
        case .string(let s): hasher.combine(s)
        case .array(let a): hasher.combine(a)
        case .object(let o): hasher.combine(o)
        }
    }

    /// The value as a `Double`, for either kind of number.
    public var doubleValue: Double? {
        switch self {
        case .integer(let i): Double(i)
        case .number(let n): n
        default: nil
        }
    }

    /// Parses JSON text; `nil` if it is not JSON.
    public init?(json: Data) {
        guard let v = try? JSONDecoder().decode(JSONValue.self, from: json) else { return nil }
        self = v
    }

    /// Canonical JSON text (sorted keys).
    public var jsonData: Data { (try? JSON.encode(self)) ?? Data("null".utf8) }
}

/// The status document of a job: what `spool get` prints and `GET /v1/jobs/{id}` answers.
public struct JobDocument: Sendable, Codable, Hashable {
    public struct Progress: Sendable, Codable, Hashable {
        public var percent: Double
        public var message: String?
    }
    public struct AttemptErrorDocument: Sendable, Codable, Hashable {
        public var attempt: Int
        public var message: String
        public var reason: String
        public var at: String
        public var worker: String?
    }

    public var id: String
    public var tenant: String
    public var queue: String
    public var kind: String
    public var state: JobState
    public var priority: Int
    public var attempt: Int
    public var max_attempts: Int
    public var payload: JSONValue
    public var result: JSONValue?
    public var progress: Progress?
    public var errors: [AttemptErrorDocument]
    public var run_at: String
    public var timeout_seconds: Double
    public var created_at: String
    public var started_at: String?
    public var finished_at: String?
    public var idempotency_key: String?
    public var callback_url: String?
    public var tags: [String]
    /// The worker of the latest attempt (its registry id).
    public var worker_id: String?
    public var lease_expires_at: String?
    /// The parent jobs it waits for (absent when none).
    public var depends_on: [String]?
    /// `cancel` or `run` (absent when it has no parents).
    public var on_parent_failure: ParentFailurePolicy?
    /// Parents not finished yet (while `waiting`).
    public var parents_left: Int?
    public var batch_id: String?
    /// Why Spool cancelled it (a parent failed, its batch was cancelled).
    public var cancel_reason: String?

    public init(_ job: Job) {
        id = job.id.description
        tenant = job.tenant
        queue = job.queue
        kind = job.kind
        state = job.state
        priority = job.priority
        attempt = job.attempt
        max_attempts = job.maxAttempts
        payload = JSONValue(json: job.payload) ?? .null
        result = job.result.flatMap { JSONValue(json: $0) }
        progress = job.progress.map { Progress(percent: $0.percent, message: $0.message) }
        errors = job.errors.map { AttemptErrorDocument(attempt: $0.attempt, message: $0.message, reason: $0.reason, at: Timestamp.format($0.at), worker: $0.worker) }
        run_at = Timestamp.format(job.runAt)
        timeout_seconds = job.timeout.seconds
        created_at = Timestamp.format(job.createdAt)
        started_at = job.startedAt.map(Timestamp.format)
        finished_at = job.finishedAt.map(Timestamp.format)
        idempotency_key = job.idempotencyKey
        callback_url = job.callbackURL
        tags = job.tags
        worker_id = job.workerID
        lease_expires_at = job.state == .processing ? job.leaseExpiresAt.map(Timestamp.format) : nil
        if !job.dependsOn.isEmpty {
            depends_on = job.dependsOn.map(\.description)
            on_parent_failure = job.onParentFailure
        }
        parents_left = job.state == .waiting ? job.parentsLeft : nil
        batch_id = job.batchID?.description
        cancel_reason = job.state == .cancelled ? job.cancelReason : nil
    }
}

/// RFC 3339 timestamps with milliseconds, in UTC.
public enum Timestamp {
    public static func format(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon).timeZone(separator: .omitted))
    }

    public static func parse(_ string: String) -> Date? {
        if let d = try? Date(string, strategy: .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon).timeZone(separator: .omitted)) { return d }
        return try? Date(string, strategy: .iso8601)
    }
}

/// A queue as `GET /v1/queues` and `spool queues --json` show it.
public struct QueueDocument: Sendable, Codable, Hashable {
    public var name: String
    public var paused: Bool
    /// Jobs waiting to run (pending + scheduled): what the depth limit counts.
    public var depth: Int
    public var depth_limit: Int?
    /// Jobs running now.
    public var running: Int
    public var counts: [String: Int]
    public var oldest_pending_age_seconds: Double?
    /// Jobs of this queue one process runs at once.
    public var concurrency: Int
    /// The longest one attempt may run (a job's own timeout overrides it).
    public var timeout_seconds: Double?
    /// Attempts before a job fails for good (a job's own max_attempts overrides it).
    public var max_attempts: Int?
    /// How long a failed attempt waits before the next one.
    public var backoff: BackoffDocument?
    /// The kinds the queue takes; absent when it takes any (see ``JobAdmission``).
    public var kinds: [String]?

    /// A queue's retry delays: `min(max_seconds, initial_seconds * multiplier^(n-1))`, moved at
    /// random by up to ±`jitter` of itself.
    public struct BackoffDocument: Sendable, Codable, Hashable {
        public var initial_seconds: Double
        public var multiplier: Double
        public var max_seconds: Double
        public var jitter: Double
    }

    public init(_ stats: QueueStats, configuration: QueueConfiguration, kinds: Set<String>? = nil) {
        name = stats.name
        paused = stats.paused
        depth = stats.depth
        depth_limit = configuration.depthLimit
        running = stats.counts[.processing] ?? 0
        counts = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0.rawValue, stats.counts[$0] ?? 0) })
        oldest_pending_age_seconds = stats.oldestPendingAge?.seconds
        concurrency = configuration.concurrency
        timeout_seconds = configuration.timeout.seconds
        max_attempts = configuration.maxAttempts
        let b = configuration.backoff
        backoff = BackoffDocument(initial_seconds: b.initial.seconds, multiplier: b.multiplier, max_seconds: b.max.seconds, jitter: b.jitter)
        self.kinds = kinds?.sorted()
    }
}

extension JSONValue: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
}
