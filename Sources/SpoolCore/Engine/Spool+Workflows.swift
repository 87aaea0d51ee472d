import Foundation

// Batches and fan-out topics from Swift (the gateway and the CLI call these too). Job
// dependencies need no call of their own: set `NewJob.dependsOn` and enqueue.
extension Spool {
    // MARK: Batches

    /// Creates a batch with `jobs` in it, atomically. The batch stays `open` for more jobs
    /// (``addToBatch(_:jobs:)``) if `batch.open`; otherwise it is closed at once.
    public func createBatch(_ batch: NewBatch, jobs: [NewJob]) async throws -> (Batch, [EnqueueResult]) {
        var batch = batch
        for (field, callback) in [("callback", batch.callback), ("on_failure", batch.onFailure)] {
            guard var callback else { continue }
            let queue = configuration.queue(callback.queue)
            callback.max_attempts = callback.max_attempts ?? queue.maxAttempts
            callback.timeout_seconds = callback.timeout_seconds ?? queue.timeout.seconds
            if field == "callback" { batch.callback = callback } else { batch.onFailure = callback }
        }
        try batch.validate()
        let (jobs, defaults, limits) = try await prepare(jobs.map { job in
            var job = job
            job.tenant = batch.tenant
            return job
        })
        let (created, results) = try await store.createBatch(batch, jobs: jobs, defaults: defaults, depthLimits: limits)
        JobMetrics.enqueued(results)
        return (created, results)
    }

    /// Adds jobs to an open batch (of the jobs' tenant), atomically.
    public func addToBatch(_ id: JobID, jobs: [NewJob]) async throws -> [EnqueueResult] {
        try await enqueue(jobs.map { job in
            var job = job
            job.batchID = id
            return job
        })
    }

    public func batch(_ id: JobID, tenant: String? = nil) async throws -> Batch? { try await store.batch(id, tenant: tenant) }
    public func closeBatch(_ id: JobID, tenant: String? = nil) async throws -> Batch { try await store.closeBatch(id, tenant: tenant) }
    public func cancelBatch(_ id: JobID, tenant: String? = nil) async throws -> Batch { try await store.cancelBatch(id, tenant: tenant) }

    // MARK: Topics

    /// The subscriptions a tenant's events reach: the config file's and the tenant's own
    /// (every tenant's when `tenant` is `nil`).
    public func subscriptions(tenant: String?, topic: String? = nil) async throws -> [TopicSubscription] {
        let configured = configuration.subscriptions.filter { topic == nil || $0.topic == topic }
        // A name the config file uses for a topic is the config's (it was added there after a
        // tenant took it): one subscriber per name, one job per subscriber and event.
        let taken = Set(configured.map { "\($0.topic)\u{0}\($0.name)" })
        return configured + (try await store.subscriptions(tenant: tenant, topic: topic)).filter { !taken.contains("\($0.topic)\u{0}\($0.name)") }
    }

    /// Adds or replaces a tenant's subscription. A name the config file uses for the topic is refused.
    public func subscribe(_ subscription: TopicSubscription) async throws {
        try subscription.validate()
        if configuration.subscriptions.contains(where: { $0.topic == subscription.topic && $0.name == subscription.name }) {
            throw SpoolError.conflict(reason: "subscriber '\(subscription.name)' of topic '\(subscription.topic)' is defined in the config file")
        }
        try await store.saveSubscription(subscription)
    }

    public func unsubscribe(tenant: String, topic: String, name: String) async throws -> Bool {
        try await store.removeSubscription(tenant: tenant, topic: topic, name: name)
    }

    /// Publishes an event: one job per matching subscriber (its queue and kind, the event's
    /// payload), written with the event in one transaction. With no subscriber the event is
    /// still recorded. The same idempotency key (per tenant and topic) publishes once.
    public func publish(topic: String, payload: Data = Data("{}".utf8), attributes: [String: String] = [:],
                        idempotencyKey: String? = nil, tenant: String = NewJob.defaultTenant) async throws -> PublishResult {
        let now = Date()
        let event = TopicEvent(id: JobID.make(now: now), tenant: tenant, topic: topic, payload: payload, attributes: attributes,
                               idempotencyKey: idempotencyKey, createdAt: now)
        try event.validate()
        let subscribers = try await subscriptions(tenant: tenant, topic: topic).filter { $0.matches(attributes) }
        let (jobs, defaults, limits) = try await prepare(subscribers.map { job(for: event, subscriber: $0) }, admitting: false)
        let result = try await store.publish(event, jobs: jobs, subscribers: subscribers.map(\.name), defaults: defaults, depthLimits: limits)
        if !result.replayed { JobMetrics.published(topic: topic, jobs: jobs.count) }
        return result
    }

    /// Makes the jobs `subscriber` would have received for the events of its topic published
    /// since `since` (still kept), skipping those it has: returns how many were made.
    public func replay(topic: String, subscriber name: String, tenant: String, since: Date) async throws -> Int {
        guard let subscriber = try await subscriptions(tenant: tenant, topic: topic).first(where: { $0.name == name }) else {
            throw SpoolError.notFoundNamed("topic '\(topic)' has no subscriber '\(name)' of tenant '\(tenant)'")
        }
        var made = 0
        var from = since
        var seen = Set<JobID>()
        for _ in 0..<1000 {  // at most 10,000,000 events
            let events = try await store.topicEvents(tenant: tenant, topic: topic, since: from, limit: 1000).filter { !seen.contains($0.id) }
            if events.isEmpty { break }
            let requests = events.filter { subscriber.matches($0.attributes) }.map { job(for: $0, subscriber: subscriber) }
            for chunk in stride(from: 0, to: requests.count, by: 500) {
                // Like a publish, not admitted again: the subscriber was checked when it subscribed.
                let (jobs, defaults, limits) = try await prepare(Array(requests[chunk..<min(chunk + 500, requests.count)]), admitting: false)
                let results = try await store.enqueue(jobs, defaults: defaults, depthLimits: limits)
                JobMetrics.enqueued(results)
                made += results.filter { !$0.replayed }.count
            }
            for event in events { seen.insert(event.id) }
            from = events.last!.createdAt
        }
        return made
    }

    /// The job `subscriber` gets for `event`.
    func job(for event: TopicEvent, subscriber: TopicSubscription) -> NewJob {
        NewJob(queue: subscriber.queue, kind: subscriber.kind, payload: event.payload,
               idempotencyKey: subscriber.jobKey(for: event.id), tenant: event.tenant)
    }
}
