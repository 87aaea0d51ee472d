import Foundation

/// How long to wait before retrying a failed attempt: exponential, capped, with jitter.
///
/// The delay before attempt `n + 1` (after `n` failures) is
/// `min(max, initial * multiplier^(n-1))`, then moved at random by up to ±`jitter` of itself,
/// so that jobs that failed together do not all come back together.
public struct Backoff: Sendable, Hashable, Codable {
    public var initial: Duration
    public var multiplier: Double
    public var max: Duration
    /// 0 to 1: the fraction of the delay that is randomised.
    public var jitter: Double

    public init(initial: Duration = .seconds(2), multiplier: Double = 2, max: Duration = .seconds(3600), jitter: Double = 0.2) {
        self.initial = initial; self.multiplier = multiplier; self.max = max; self.jitter = jitter
    }

    /// No delay at all (for tests and for queues that retry at once).
    public static let none = Backoff(initial: .zero, multiplier: 1, max: .zero, jitter: 0)

    /// The delay after `failures` failed attempts (1 for the first failure).
    public func delay<R: RandomNumberGenerator>(afterFailures failures: Int, using rng: inout R) -> Duration {
        let initialSeconds = initial.seconds
        guard initialSeconds > 0 else { return .zero }
        let exponent = Double(Swift.max(0, failures - 1))
        let raw = Swift.min(max.seconds, initialSeconds * pow(Swift.max(1, multiplier), exponent))
        let j = Swift.min(1, Swift.max(0, jitter))
        let factor = j == 0 ? 1 : Double.random(in: (1 - j)...(1 + j), using: &rng)
        return .milliseconds(Int64((raw * factor * 1000).rounded()))
    }

    public func delay(afterFailures failures: Int) -> Duration {
        var rng = SystemRandomNumberGenerator()
        return delay(afterFailures: failures, using: &rng)
    }
}

/// The settings of one queue. Every process that serves or enqueues to a queue should use the
/// same settings (they come from the same config file).
public struct QueueConfiguration: Sendable, Hashable {
    /// How many jobs of this queue one process runs at once.
    public var concurrency: Int
    /// The longest one attempt may run; a job's own `timeout` overrides it.
    public var timeout: Duration
    /// Attempts before a job goes to `failed`; a job's own `maxAttempts` overrides it.
    public var maxAttempts: Int
    /// The most jobs that may wait (`pending` + `scheduled`); enqueues past it fail with
    /// ``SpoolError/queueFull(queue:limit:retryAfter:)``. `nil` means no limit.
    public var depthLimit: Int?
    public var backoff: Backoff
    /// The webhook URL of jobs enqueued without a `callback_url` of their own.
    public var callbackURL: String?

    public init(concurrency: Int = 10, timeout: Duration = .seconds(3600), maxAttempts: Int = 5,
                depthLimit: Int? = 1_000_000, backoff: Backoff = Backoff(), callbackURL: String? = nil) {
        self.concurrency = concurrency; self.timeout = timeout; self.maxAttempts = maxAttempts
        self.depthLimit = depthLimit; self.backoff = backoff; self.callbackURL = callbackURL
    }
}

/// Process-wide engine settings.
public struct EngineConfiguration: Sendable {
    /// How long a lease lasts without a heartbeat. A worker that stops heartbeating loses its
    /// jobs after this long.
    public var leaseDuration: Duration = .seconds(30)
    /// How often running jobs' leases are renewed.
    public var heartbeatInterval: Duration = .seconds(10)
    /// How often expired leases are looked for (and finished jobs pruned).
    public var maintenanceInterval: Duration = .seconds(5)
    /// The longest a worker waits before looking for work without a wake-up (jobs enqueued by
    /// another process on the same SQLite file are found this way).
    public var pollInterval: Duration = .milliseconds(500)
    /// How often finished jobs past their retention are deleted.
    public var pruneInterval: Duration = .seconds(60)
    /// How long running jobs may take to finish on shutdown before they are given back.
    public var shutdownGracePeriod: Duration = .seconds(25)
    /// Completed and cancelled jobs are deleted this long after they finished; `nil` keeps them.
    public var completedRetention: Duration? = .seconds(7 * 86_400)
    /// Failed jobs (the dead letters) are deleted this long after they failed; `nil` keeps them.
    public var failedRetention: Duration? = .seconds(30 * 86_400)
    /// Job events are kept this long, for clients that reconnect and resume.
    public var eventRetention: Duration = .seconds(86_400)
    /// Figures per queue and minute (`GET /v1/stats`, the dashboard's charts) are kept this long.
    public var statsRetention: Duration = .seconds(14 * 86_400)
    /// How often each process writes its figures per queue and minute.
    public var statsFlushInterval: Duration = .seconds(60)
    /// The most jobs one worker pool leases in one round trip.
    public var leaseBatchSize: Int = 100
    /// Settings for queues not named in `queues`.
    public var defaultQueue = QueueConfiguration()
    public var queues: [String: QueueConfiguration] = [:]
    /// Schemas that payloads of a kind must match at enqueue (see ``Spool/setPayloadSchema(_:forKind:)``).
    public var payloadSchemas: [String: PayloadSchema] = [:]
    /// Which queues and kinds enqueues may name (see ``JobAdmission``).
    public var admission = JobAdmission()
    /// Topic subscriptions of the config file: they receive every tenant's events.
    public var subscriptions: [TopicSubscription] = []
    /// A name for this process in leases and logs.
    public var workerID: String = EngineConfiguration.defaultWorkerID()
    /// What the worker registry calls this process (`spool serve`, `spool worker`, a program's name).
    public var workerName: String = ProcessInfo.processInfo.processName
    /// How long a lost worker stays in the registry before it is dropped.
    public var lostWorkerRetention: Duration = .seconds(3600)

    public init() {}

    public func queue(_ name: String) -> QueueConfiguration {
        queues[name] ?? (name == Webhook.queue ? Webhook.queueConfiguration : defaultQueue)
    }

    /// `host:pid:random`: the host and pid say where a worker runs; the random part keeps ids
    /// unique where those repeat (containers all run as pid 1, hosts share names).
    public static func defaultWorkerID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let random = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        return "\(host):\(ProcessInfo.processInfo.processIdentifier):\(random)"
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }

    /// A duration from a (possibly fractional) number of seconds.
    /// A duration from a (possibly fractional) number of seconds, clamped to ±100 years.
    public static func seconds(fractional s: Double) -> Duration {
        let limit = 100 * 365.25 * 86_400.0
        let clamped = s.isFinite ? min(limit, max(-limit, s)) : 0
        return .nanoseconds(Int64((clamped * 1e9).rounded()))
    }
}
