import Foundation
import Hummingbird
import SpoolCore

/// `/v1/topics`: fan-out. An event published to a topic becomes one job per subscriber.
struct TopicRoutes {
    let gateway: Gateway
    var spool: Spool { gateway.spool }

    struct EventDocument: Encodable {
        var id: String
        var topic: String
        var tenant: String
        var payload: JSONValue
        var attributes: [String: String]
        var idempotency_key: String?
        var job_ids: [String]
        var created_at: String
        init(_ event: TopicEvent) {
            id = event.id.description; topic = event.topic; tenant = event.tenant
            payload = JSONValue(json: event.payload) ?? .null; attributes = event.attributes
            idempotency_key = event.idempotencyKey; job_ids = event.jobIDs.map(\.description)
            created_at = Timestamp.format(event.createdAt)
        }
    }

    /// The tenant whose subscriptions an admin manages: its own, or `?tenant=`.
    private func managedTenant(_ request: Request, _ principal: Principal) throws -> String {
        guard let tenant = request.uri.queryParameters["tenant"].map(String.init), !tenant.isEmpty else { return principal.tenant }
        guard NewJob.isValidName(tenant, maxLength: 128) else { throw Problem.validation("tenant", "must be 1-128 characters of A-Z a-z 0-9 _ . - :") }
        return tenant
    }

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.get("topics") { _, context in
            let principal = try context.require(.read)
            return try JSONResponse.make(["topics": try await spool.topicOverview(tenant: principal.tenantFilter)])
        }
        api.post("topics/:topic/events", use: publish)
        api.get("topics/:topic/events") { request, context in
            let principal = try context.require(.read)
            let topic = try context.nameParameter("topic", "topic")
            let query = request.uri.queryParameters
            var since = Date(timeIntervalSince1970: 0)
            if let text = query["since"] {
                guard let date = Timestamp.parse(String(text)) else { throw Problem.validation("since", "must be an RFC 3339 timestamp") }
                since = date
            }
            var limit = 100
            if let text = query["limit"] {
                guard let n = Int(String(text)), (1...1000).contains(n) else { throw Problem.validation("limit", "must be 1 to 1000") }
                limit = n
            }
            let events = try await spool.store.topicEvents(tenant: principal.tenant, topic: topic, since: since, limit: limit)
            return try JSONResponse.make(["events": events.map(EventDocument.init)])
        }
        api.put("topics/:topic/subscriptions/:name") { request, context in
            let principal = try context.require(.admin)
            let topic = try context.nameParameter("topic", "topic"), name = try context.nameParameter("name", "subscriber")
            struct Body: Decodable { var queue: String?; var kind: String; var filter: [String: [String]]? }
            let body = try await request.decodeJSON(Body.self, limit: gateway.configuration.maxBodyBytes)
            let tenant = try managedTenant(request, principal)
            let subscription = TopicSubscription(tenant: tenant, topic: topic, name: name, queue: body.queue ?? "default",
                                                 kind: body.kind, filter: body.filter ?? [:])
            try await JobRoutes(gateway: gateway).check(NewJob(queue: subscription.queue, kind: subscription.kind, tenant: tenant))
            try await spool.subscribe(subscription)
            return try JSONResponse.make(SubscriberDocument(subscription, jobs: 0))
        }
        api.delete("topics/:topic/subscriptions/:name") { request, context in
            let principal = try context.require(.admin)
            let topic = try context.nameParameter("topic", "topic"), name = try context.nameParameter("name", "subscriber")
            let tenant = try managedTenant(request, principal)
            guard try await spool.unsubscribe(tenant: tenant, topic: topic, name: name) else {
                throw Problem.notFound("topic '\(topic)' has no subscriber '\(name)' of tenant '\(tenant)'")
            }
            return Response(status: .noContent)
        }
        api.post("topics/:topic/subscriptions/:name/replay") { request, context in
            let principal = try context.require(.admin)
            let topic = try context.nameParameter("topic", "topic"), name = try context.nameParameter("name", "subscriber")
            struct Body: Decodable { var since: String }
            let body = try await request.decodeJSON(Body.self, limit: gateway.configuration.maxBodyBytes)
            guard let since = Timestamp.parse(body.since) else { throw Problem.validation("since", "must be an RFC 3339 timestamp") }
            let made = try await spool.replay(topic: topic, subscriber: name, tenant: try managedTenant(request, principal), since: since)
            return try JSONResponse.make(["jobs": made], status: .accepted)
        }
    }

    @Sendable func publish(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.enqueue)
        let topic = try context.nameParameter("topic", "topic")
        let body = try await request.jsonBody(limit: gateway.configuration.maxBodyBytes)
        guard case .object(let object) = body else { throw Problem.validation("body", "must be a JSON object") }
        if let unknown = object.keys.filter({ !["payload", "attributes", "idempotency_key"].contains($0) }).sorted().first {
            throw Problem.validation(unknown, "unknown field")
        }
        var attributes: [String: String] = [:]
        switch object["attributes"] {
        case nil, .null?: break
        case .object(let fields)?:
            for (name, value) in fields {
                guard case .string(let text) = value else { throw Problem.validation("attributes.\(name)", "must be a string") }
                attributes[name] = text
            }
        default: throw Problem.validation("attributes", "must be an object of strings")
        }
        let bodyKey = try JobRequest.string(object, "idempotency_key"), headerKey = request.headers[.idempotencyKey]
        if let bodyKey, let headerKey, bodyKey != headerKey { throw Problem.validation("idempotency_key", "differs from the Idempotency-Key header") }
        let result = try await spool.publish(topic: topic, payload: (object["payload"] ?? .object([:])).jsonData, attributes: attributes,
                                             idempotencyKey: bodyKey ?? headerKey, tenant: principal.tenant)
        struct Published: Encodable { var event_id: String; var topic: String; var job_ids: [String]; var replayed: Bool }
        let answer = Published(event_id: result.event.id.description, topic: topic, job_ids: result.event.jobIDs.map(\.description),
                               replayed: result.replayed)
        return try JSONResponse.make(answer, status: result.replayed ? .ok : .accepted,
                                     headers: result.replayed ? [.idempotentReplayed: "true"] : [:])
    }

}
