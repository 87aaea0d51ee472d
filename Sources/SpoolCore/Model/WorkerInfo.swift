import Foundation

/// A worker as the registry knows it: an in-process worker (``SpoolWorker``, `spool serve`,
/// `spool worker`) or a remote one speaking the HTTP worker protocol.
public struct WorkerInfo: Sendable, Hashable {
    /// Unique across machines and containers (in-process: `host:pid:random`).
    public var id: String
    /// The tenant a remote worker's token binds it to; `nil` for in-process workers, which
    /// serve every tenant.
    public var tenant: String?
    /// What it is: `spool serve`, `spool worker`, or what a remote worker calls itself.
    public var name: String
    public var host: String?
    public var pid: Int?
    /// The client library and its version (remote workers).
    public var version: String?
    public var queues: [String]
    public var kinds: [String]
    /// Jobs it runs at once.
    public var concurrency: Int
    /// Jobs it runs now.
    public var running: Int
    public var startedAt: Date
    public var lastSeenAt: Date
    /// Past this without news it is `lost` (its leases have expired by then); a while later it
    /// is dropped from the registry.
    public var expiresAt: Date

    public init(id: String, tenant: String? = nil, name: String, host: String? = nil, pid: Int? = nil, version: String? = nil,
                queues: [String], kinds: [String], concurrency: Int, running: Int = 0,
                startedAt: Date, lastSeenAt: Date, expiresAt: Date) {
        self.id = id; self.tenant = tenant; self.name = name; self.host = host; self.pid = pid; self.version = version
        self.queues = queues; self.kinds = kinds; self.concurrency = concurrency; self.running = running
        self.startedAt = startedAt; self.lastSeenAt = lastSeenAt; self.expiresAt = expiresAt
    }

    /// `active`, or `lost` once it has missed its heartbeats.
    public func state(at now: Date = Date()) -> String { now > expiresAt ? "lost" : "active" }
}

/// One worker, as the API shows it.
public struct WorkerDocument: Codable, Sendable {
    public var id: String
    public var tenant: String?
    public var name: String
    public var host: String?
    public var pid: Int?
    public var version: String?
    public var queues: [String]
    public var kinds: [String]
    public var concurrency: Int
    public var running: Int
    /// `active`, or `lost`: it missed its heartbeats (its jobs run elsewhere once their
    /// leases expire); it is dropped later.
    public var state: String
    public var started_at: String
    public var last_seen_at: String

    public init(_ worker: WorkerInfo, now: Date) {
        id = worker.id; tenant = worker.tenant; name = worker.name; host = worker.host; pid = worker.pid
        version = worker.version; queues = worker.queues; kinds = worker.kinds
        concurrency = worker.concurrency; running = worker.running; state = worker.state(at: now)
        started_at = Timestamp.format(worker.startedAt); last_seen_at = Timestamp.format(worker.lastSeenAt)
    }
}
