import Foundation

/// A request to enqueue one job.
public struct NewJob: Sendable, Hashable {
    /// The tenant used when none is given (the embedded, single-tenant default).
    public static let defaultTenant = "default"

    public var queue: String
    public var kind: String
    /// The job's input as JSON text.
    public var payload: Data
    public var priority: Int
    /// Run no earlier than this; `nil` runs as soon as a worker is free.
    public var runAt: Date?
    /// Overrides the queue's `maxAttempts`.
    public var maxAttempts: Int?
    /// Overrides the queue's timeout.
    public var timeout: Duration?
    /// The same key (per tenant) returns the existing job instead of making another.
    public var idempotencyKey: String?
    public var callbackURL: String?
    public var tags: [String]
    public var tenant: String
    /// Parent jobs: the job waits (`waiting`) until every parent has finished. An existing job
    /// of the same tenant, or an earlier request of the same ``JobStore/enqueue(_:defaults:depthLimits:)`` call.
    public var dependsOn: [ParentReference] = []
    /// What happens to this job when a parent fails for good or is cancelled.
    public var onParentFailure: ParentFailurePolicy = .cancel
    /// The open batch the job joins.
    public var batchID: JobID?

    public init(
        queue: String = "default", kind: String, payload: Data = Data("{}".utf8), priority: Int = 0,
        runAt: Date? = nil, maxAttempts: Int? = nil, timeout: Duration? = nil,
        idempotencyKey: String? = nil, callbackURL: String? = nil, tags: [String] = [],
        tenant: String = NewJob.defaultTenant
    ) {
        self.queue = queue; self.kind = kind; self.payload = payload; self.priority = priority
        self.runAt = runAt; self.maxAttempts = maxAttempts; self.timeout = timeout
        self.idempotencyKey = idempotencyKey; self.callbackURL = callbackURL
        self.tags = tags; self.tenant = tenant
    }

    /// A job whose payload is any `Encodable` value.
    public init<P: Encodable>(
        queue: String = "default", kind: String, payload: P, priority: Int = 0, runAt: Date? = nil,
        maxAttempts: Int? = nil, timeout: Duration? = nil, idempotencyKey: String? = nil,
        tenant: String = NewJob.defaultTenant
    ) throws {
        self.init(
            queue: queue, kind: kind, payload: try JSON.encode(payload), priority: priority, runAt: runAt,
            maxAttempts: maxAttempts, timeout: timeout, idempotencyKey: idempotencyKey, tenant: tenant)
    }

    /// Checks the request on its own (queue settings are checked by the engine).
    public func validate() throws(SpoolError) {
        func invalid(_ field: String, _ why: String) -> SpoolError { .invalid(field: field, reason: why) }
        try validateNames()
        guard Self.priorityRange.contains(priority) else { throw invalid("priority", "must be between \(Self.priorityRange.lowerBound) and \(Self.priorityRange.upperBound)") }
        if let runAt, runAt.timeIntervalSince1970 < 946_684_800 || runAt.timeIntervalSinceNow > 5 * 366 * 86_400 {
            throw invalid("run_at", "must be after 2000-01-01 and within five years from now")
        }
        if let maxAttempts, !(1...1000).contains(maxAttempts) { throw invalid("max_attempts", "must be between 1 and 1000") }
        if let timeout, timeout <= .zero || timeout > .seconds(7 * 86_400) { throw invalid("timeout_seconds", "must be more than 0 and at most 7 days") }
        if let key = idempotencyKey, key.isEmpty || key.utf8.count > 255 { throw invalid("idempotency_key", "must be 1-255 bytes") }
        if tags.count > 32 || tags.contains(where: { $0.isEmpty || $0.utf8.count > 64 }) { throw invalid("tags", "at most 32 tags of 1-64 bytes") }
        if let url = callbackURL {
            guard let u = URL(string: url), let scheme = u.scheme?.lowercased(), scheme == "http" || scheme == "https", u.host != nil
            else { throw invalid("callback_url", "must be an absolute http or https URL") }
        }
        guard (try? JSONSerialization.jsonObject(with: payload, options: [.fragmentsAllowed])) != nil else {
            throw invalid("payload", "must be valid JSON")
        }
        if dependsOn.count > Self.maxParents { throw invalid("depends_on", "at most \(Self.maxParents) parents") }
    }

    /// The most parents one job may name.
    public static let maxParents = 10_000

    public static let priorityRange = -1000...1000

    /// Checks the names alone (queue, kind, tenant), cheaply. Every store calls this on each
    /// job it is asked to write, whoever calls it: names are written into the event log and
    /// into notifications as they are.
    public func validateNames() throws(SpoolError) {
        try Self.validateQueue(queue)
        guard Self.isValidName(kind, maxLength: 128) else { throw .invalid(field: "kind", reason: "must be 1-128 characters of A-Z a-z 0-9 _ . - :") }
        guard Self.isValidName(tenant, maxLength: 128) else { throw .invalid(field: "tenant", reason: "must be 1-128 characters of A-Z a-z 0-9 _ . - :") }
    }

    /// Checks a queue name (from a URL, the CLI or the Swift API).
    public static func validateQueue(_ queue: String) throws(SpoolError) {
        guard isValidName(queue) else { throw .invalid(field: "queue", reason: "must be 1-64 characters of A-Z a-z 0-9 _ . - :") }
    }

    public static func isValidName(_ s: String, maxLength: Int = 64) -> Bool {
        guard !s.isEmpty, s.utf8.count <= maxLength else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == 0x5F || c == 0x2E || c == 0x2D || c == 0x3A
        }
    }
}

/// What an enqueue gave back: the job, and whether it already existed under its idempotency key.
public struct EnqueueResult: Sendable, Hashable {
    public var job: Job
    /// `true` when the idempotency key matched an existing job and nothing new was written.
    public var replayed: Bool
    public init(job: Job, replayed: Bool) { self.job = job; self.replayed = replayed }
}

/// The rules for a handler's result, kept by the stores (so a bad result fails only its own
/// job, never a batch of completions) and by the engine (which then fails the attempt for good).
public enum JobResult {
    /// The largest result stored, in bytes of JSON text.
    public static let maxBytes = 1 << 20

    /// Throws ``SpoolError/invalid(field:reason:)`` unless `data` is one JSON value of at most
    /// ``maxBytes`` bytes.
    public static func validate(_ data: Data) throws(SpoolError) {
        guard data.count <= maxBytes else {
            throw .invalid(field: "result", reason: "is \(data.count) bytes; the limit is \(maxBytes) bytes")
        }
        // One JSON value in UTF-8, without a byte-order mark: the stores write the text
        // verbatim into the event log's rows, where a BOM (which parsers skip only at the
        // start of a document) would make the whole row unreadable.
        guard !data.starts(with: [0xEF, 0xBB, 0xBF]), String(validating: data, as: UTF8.self) != nil,
              (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) != nil else {
            throw .invalid(field: "result", reason: "is not valid JSON (\(data.count) bytes)")
        }
    }
}

/// JSON helpers shared by the engine and the stores.
public enum JSON {
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(Timestamp.format(date))
        }
        return try encoder.encode(value)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let c = try decoder.singleValueContainer()
            let s = try c.decode(String.self)
            guard let date = Timestamp.parse(s) else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a timestamp: \(s)") }
            return date
        }
        return try decoder.decode(type, from: data)
    }
}
