import Foundation
import NIOHTTP1
import SpoolCore
import SpoolWebhooks
import Yams

/// The config file (`spool.yaml`), as documented in README.md. Every field is optional.
struct ConfigFile: Decodable {
    struct BackoffFile: Decodable {
        var initial_seconds: Double?
        var multiplier: Double?
        var max_seconds: Double?
        var jitter: Double?
    }
    struct QueueFile: Decodable {
        /// Kinds the gateway accepts for this queue (any registered kind when absent).
        var kinds: [String]?
        var concurrency: Int?
        var timeout_seconds: Double?
        var max_attempts: Int?
        /// A number, or `none` for no limit.
        var depth_limit: DepthLimit?
        var backoff: BackoffFile?
        /// Webhook URL for jobs enqueued without a callback_url.
        var callback_url: String?
    }
    struct WebhooksFile: Decodable {
        /// Allow callback URLs on loopback addresses (127.0.0.0/8, ::1, localhost).
        var allow_loopback: Bool?
        /// Allow callback URLs on private and link-local networks.
        var allow_private_networks: Bool?
        /// Signing secrets per tenant (`whsec_...`); tenants not listed get one made and kept in the database.
        var secrets: [String: String]?
        var timeout_seconds: Double?
    }
    enum DepthLimit: Decodable {
        case limit(Int)
        case unlimited
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let n = try? c.decode(Int.self) { self = .limit(n); return }
            let s = try c.decode(String.self)
            guard s == "none" || s == "unlimited" else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "depth_limit must be a number or 'none'")
            }
            self = .unlimited
        }
    }
    struct RetentionFile: Decodable {
        var completed_hours: Double?
        var failed_hours: Double?
        /// Figures per queue and minute (the dashboard's charts, GET /v1/stats).
        var stats_days: Double?
    }

    struct TokenFile: Decodable {
        var name: String?
        var tenant: String?
        var scopes: [String]
        /// SHA-256 of the secret, hex (what `spool token new` prints).
        var sha256: String
    }
    struct GatewayFile: Decodable {
        var host: String?
        var port: Int?
        var max_body_bytes: Int?
        var max_batch_jobs: Int?
        var tokens: [TokenFile]?
        /// This gateway's address as services reach it, for the reports of HTTP service kinds
        /// that answer 202 (default: the address it listens on, when that is not 0.0.0.0 or ::).
        var public_url: String?
    }

    var database: String?
    var durability: String?
    var gateway: GatewayFile?
    var lease_seconds: Double?
    var heartbeat_seconds: Double?
    var grace_seconds: Double?
    var poll_ms: Double?
    var retention: RetentionFile?
    /// Settings for every queue not listed under `queues`.
    var defaults: QueueFile?
    var queues: [String: QueueFile]?
    var webhooks: WebhooksFile?
    struct PostgresFile: Decodable {
        /// Connections in each process's pool (one more is kept for LISTEN).
        var max_connections: Int?
        /// How long a call waits for the database before it fails (the API answers 503).
        var operation_timeout_seconds: Double?
    }
    var postgres: PostgresFile?
    /// Job kinds without code (`http`, `command`) and payload schemas, per kind name (KindsConfig.swift).
    var kinds: [String: KindFile]?
    struct SubscriberFile: Decodable {
        var queue: String?
        var kind: String
        /// Attribute name → accepted values (an event matches when each has one of them).
        var filter: [String: [String]]?
    }
    struct TopicFile: Decodable {
        var subscribers: [String: SubscriberFile]?
    }
    /// Fan-out topics and their subscribers, per topic name: every tenant's events reach them.
    var topics: [String: TopicFile]?

    /// Where the file came from (set by `load`, never read from the file), to name the line
    /// of a field in errors found after decoding.
    var source: ConfigSource?

    /// Reads and checks the file: a YAML error, a value of the wrong type or a key this
    /// version does not know stops the process with the file's line (ConfigCheck.swift).
    static func load(path: String) throws -> ConfigFile {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw CLIError("config file \(path) is not valid YAML: \(error)")
        }
        let config: ConfigFile
        do {
            config = try YAMLDecoder().decode(ConfigFile.self, from: text)
        } catch let error as DecodingError {
            throw CLIError("config file \(path)\(ConfigCheck.explain(error, root: root))")
        } catch {
            throw CLIError("config file \(path) is not valid: \(error)")
        }
        if let root, let unknown = ConfigCheck.unknownKey(in: root, of: config) {
            throw CLIError("config file \(path)\(unknown)")
        }
        var loaded = config
        loaded.source = ConfigSource(path: path, root: root)
        // Schemas read from the nodes themselves, so that quoting is kept (see ConfigCheck.json).
        if case .mapping(let top)? = root, case .mapping(let kindNodes)? = top["kinds"] {
            for (name, kind) in config.kinds ?? [:] where kind.payload_schema != nil {
                if case .mapping(let fields)? = kindNodes[name], let schema = fields["payload_schema"] {
                    loaded.kinds?[name]?.payload_schema = ConfigCheck.json(schema)
                }
            }
        }
        return loaded
    }

    func apply(to config: inout EngineConfiguration) throws {
        try located { try $0.applyFields(to: &config) }
    }

    private func applyFields(to config: inout EngineConfiguration) throws {
        if let s = lease_seconds { config.leaseDuration = try positive(s, "lease_seconds") }
        if let s = heartbeat_seconds { config.heartbeatInterval = try positive(s, "heartbeat_seconds") }
        if let s = grace_seconds { config.shutdownGracePeriod = .seconds(fractional: max(0, s)) }
        if let ms = poll_ms { config.pollInterval = try positive(ms / 1000, "poll_ms") }
        if let h = retention?.completed_hours { config.completedRetention = h <= 0 ? nil : .seconds(fractional: h * 3600) }
        if let h = retention?.failed_hours { config.failedRetention = h <= 0 ? nil : .seconds(fractional: h * 3600) }
        if let d = retention?.stats_days { config.statsRetention = try positive(d * 86_400, "retention.stats_days") }
        if let d = defaults { config.defaultQueue = try d.apply(to: config.defaultQueue, name: "defaults") }
        for (name, q) in queues ?? [:] {
            config.queues[name] = try q.apply(to: config.queue(name), name: "queues.\(name)")
        }
        config.payloadSchemas = try payloadSchemas()
        // What enqueues may name, the same from this CLI, the gateway and the workers.
        config.admission.enforced = true
        for (name, q) in queues ?? [:] {
            if let kinds = q.kinds { config.admission.kinds[name] = Set(kinds) }
        }
        config.admission.declaredKinds = try declaredKinds().runners
        let policy = try webhookFields().policy
        config.admission.callbackCheck = { policy.checkLiteral($0) }
        config.subscriptions = []
        for (topic, file) in (topics ?? [:]).sorted(by: { $0.key < $1.key }) {
            for (name, s) in (file.subscribers ?? [:]).sorted(by: { $0.key < $1.key }) {
                let subscription = TopicSubscription(tenant: nil, topic: topic, name: name, queue: s.queue ?? "default", kind: s.kind,
                                                     filter: s.filter ?? [:], createdAt: Date(timeIntervalSince1970: 0))
                do { try subscription.validate() } catch {
                    throw CLIError("topics.\(topic).subscribers.\(name): \(error)")
                }
                config.subscriptions.append(subscription)
            }
        }
    }

    /// Webhook settings: the config file's `webhooks` section, then `SPOOL_WEBHOOK_ALLOW_LOOPBACK=1`.
    func webhookConfiguration() throws -> WebhookConfiguration {
        try located { try $0.webhookFields() }
    }

    private func webhookFields() throws -> WebhookConfiguration {
        var config = WebhookConfiguration()
        config.policy.allowLoopback = webhooks?.allow_loopback ?? false
        config.policy.allowPrivateNetworks = webhooks?.allow_private_networks ?? false
        if ProcessInfo.processInfo.environment["SPOOL_WEBHOOK_ALLOW_LOOPBACK"] == "1" { config.policy.allowLoopback = true }
        for (tenant, secret) in webhooks?.secrets ?? [:] {
            do { _ = try WebhookSignature.sign(id: "check", timestamp: 0, body: Data(), secret: secret) } catch {
                throw CLIError("webhooks.secrets.\(tenant): \(error)")
            }
            config.secrets[tenant] = secret
        }
        if let t = webhooks?.timeout_seconds {
            guard t <= 25 else { throw CLIError("webhooks.timeout_seconds must be at most 25 (one delivery attempt may take 30 s)") }
            config.requestTimeout = try positive(t, "webhooks.timeout_seconds")
        }
        return config
    }
}

extension ConfigFile.QueueFile {
    func apply(to base: QueueConfiguration, name: String) throws -> QueueConfiguration {
        var q = base
        if let c = concurrency {
            guard (1...10_000).contains(c) else { throw CLIError("\(name).concurrency must be 1-10000") }
            q.concurrency = c
        }
        if let t = timeout_seconds { q.timeout = try positive(t, "\(name).timeout_seconds") }
        if let a = max_attempts {
            guard (1...1000).contains(a) else { throw CLIError("\(name).max_attempts must be 1-1000") }
            q.maxAttempts = a
        }
        switch depth_limit {
        case .limit(let n)?:
            guard n > 0 else { throw CLIError("\(name).depth_limit must be positive or 'none'") }
            q.depthLimit = n
        case .unlimited?: q.depthLimit = nil
        case nil: break
        }
        if let b = backoff {
            if let v = b.initial_seconds { q.backoff.initial = .seconds(fractional: max(0, v)) }
            if let v = b.multiplier { q.backoff.multiplier = max(1, v) }
            if let v = b.max_seconds { q.backoff.max = .seconds(fractional: max(0, v)) }
            if let v = b.jitter { q.backoff.jitter = min(1, max(0, v)) }
        }
        if let url = callback_url {
            guard let u = URL(string: url), u.scheme == "http" || u.scheme == "https", u.host != nil else {
                throw CLIError("\(name).callback_url must be an absolute http or https URL")
            }
            q.callbackURL = url
        }
        return q
    }
}

/// A positive number of seconds from the config file, or a readable error naming the field.
func positive(_ seconds: Double, _ name: String) throws -> Duration {
    guard seconds > 0, seconds.isFinite else { throw CLIError("\(name) must be a positive number") }
    return .seconds(fractional: seconds)
}

/// A user-facing error: printed as is, exit code 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
