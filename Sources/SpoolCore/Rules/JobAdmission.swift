import Foundation

/// Which jobs a deployment takes. The same rules apply wherever a job comes from: Swift
/// (``Spool/enqueue(_:)-([NewJob])``), the CLI on a database file, and HTTP.
///
/// A job is taken when:
/// - its queue is known: `default`, a queue of the engine's configuration, or one of
///   ``queues``; `spool.webhooks` and the kind `spool.webhook` are Spool's own;
/// - its kind runs somewhere. A queue with its own list (``kinds``) takes only those kinds.
///   Any other queue takes a kind this process has a handler for, a kind the config file
///   declares (``declaredKinds``), or a kind a worker in the registry runs for that queue
///   (`spool worker` processes and remote workers announce theirs). A deployment that knows no
///   kind at all yet (nothing registered, declared or announced) takes any kind: it cannot
///   tell, and `spool serve` warns about it at start-up;
/// - its callback URL passes ``callbackCheck`` (the webhook address policy).
///
/// A `Spool` made in Swift enforces nothing unless ``enforced`` is set (its workers may run
/// in other programs); `spool serve`, `spool worker`, the CLI and the gateway enforce.
public struct JobAdmission: Sendable {
    /// Check enqueues from Swift against these rules (the gateway always does).
    public var enforced = false
    /// Queues accepted besides `default` and those of the engine's configuration.
    public var queues: Set<String> = []
    /// Queues that take only the kinds listed (`queues.<name>.kinds` in the config file).
    public var kinds: [String: Set<String>] = [:]
    /// Kinds declared in the config file and how they run: `http`, `command`, or `elsewhere`
    /// (given only a payload schema: run by another process).
    public var declaredKinds: [String: String] = [:]
    /// Why a callback URL is refused, or `nil` when it is allowed.
    public var callbackCheck: (@Sendable (String) -> String?)?

    public init() {}

    /// Whether `name` is a queue the configuration knows: `default`, configured, or listed
    /// here. (``Spool/knowsQueue(_:)`` adds the queues workers in the registry work.)
    public func knowsQueue(_ name: String, configured: some Collection<String>) -> Bool {
        name == "default" || configured.contains(name) || kinds[name] != nil || queues.contains(name)
    }

    /// The kinds `queue` takes, or `nil` for any. `handlers` are this process's kinds;
    /// `announced` those workers in the registry run, per queue.
    public func acceptedKinds(queue: String, handlers: Set<String>, announced: [String: Set<String>]) -> Set<String>? {
        if let listed = kinds[queue] { return listed }
        let forQueue = announced[queue] ?? []
        guard !handlers.isEmpty || !declaredKinds.isEmpty || !forQueue.isEmpty else { return nil }
        return handlers.union(declaredKinds.keys).union(forQueue)
    }

    /// Whether `queue` takes `kind`, without building a set (the enqueue path): `hasHandler`
    /// says whether this process runs the kind, `hasHandlers` whether it runs any; `announced`
    /// are the kinds workers in the registry run for this queue. `nil`: taken without knowing
    /// (nothing is known about the queue's kinds).
    public func takes(_ kind: String, queue: String, hasHandler: Bool, hasHandlers: Bool, announced: Set<String>?) -> Bool? {
        if let listed = kinds[queue] { return listed.contains(kind) }
        guard hasHandlers || !declaredKinds.isEmpty || announced?.isEmpty == false else { return nil }
        return hasHandler || declaredKinds[kind] != nil || announced?.contains(kind) == true
    }

    /// Why `job` is refused, or `nil` when it is taken (see ``takes(_:queue:hasHandler:hasHandlers:announced:)``).
    /// `known` (for the message) are the kinds the queue takes when it does not take this one.
    public func refusal(_ job: NewJob, queueKnown: Bool, takesKind: Bool?, known: () -> Set<String>? = { nil }) -> SpoolError? {
        if job.queue == Webhook.queue || job.kind == Webhook.kind {
            return .invalid(field: job.queue == Webhook.queue ? "queue" : "kind",
                            reason: "'\(Webhook.queue)' and '\(Webhook.kind)' are reserved for webhook deliveries")
        }
        guard queueKnown else {
            return .invalid(field: "queue", reason: "unknown queue '\(job.queue.prefix(128))'; configure it under 'queues' in the config file")
        }
        if takesKind == false {
            let list = (known() ?? []).sorted()
            return .invalid(field: "kind", reason: "unknown kind '\(job.kind.prefix(128))' for queue '\(job.queue)': no handler, declared kind or worker runs it"
                            + (list.isEmpty ? "" : " (known: \(list.prefix(20).joined(separator: ", ")))"))
        }
        if let url = job.callbackURL, let why = callbackCheck?(url) {
            return .invalid(field: "callback_url", reason: "refused: \(why); callbacks may only reach public addresses unless the operator allows it (webhooks.allow_loopback / allow_private_networks)")
        }
        return nil
    }
}
