import Foundation
import Hummingbird
import SpoolCore
import SpoolWebhooks

/// `GET /v1/jobs/{id}/deliveries`: every webhook notification about a job and each of its
/// attempts. `GET /v1/webhooks/secret`: the caller's tenant's signing secret, for receivers.
struct WebhookRoutes {
    let gateway: Gateway

    struct DeliveryDocument: Encodable {
        var id: String
        var job_id: String
        var url: String
        var event: String
        /// `pending`, `retrying`, `delivered` or `gave_up`.
        var status: String
        var created_at: String
        var attempts: [Attempt]

        struct Attempt: Encodable {
            var attempt: Int
            var at: String
            var status_code: Int?
            var duration_ms: Double
            var error: String?
        }

        init(_ d: WebhookDelivery) {
            id = d.id.description; job_id = d.jobID.description; url = d.url; event = d.event; status = d.status
            created_at = Timestamp.format(d.createdAt)
            attempts = d.attempts.map {
                Attempt(attempt: $0.attempt, at: Timestamp.format($0.at), status_code: $0.status_code, duration_ms: $0.duration_ms, error: $0.error)
            }
        }
    }

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.get("jobs/:id/deliveries") { request, context in
            let principal = try context.require(.read)
            let id = try context.jobIDParameter()
            guard let job = try await gateway.spool.job(id, tenant: principal.tenantFilter) else {
                throw Problem.notFound("job \(id) not found")
            }
            let deliveries = try await gateway.spool.store.webhookDeliveries(of: id, tenant: principal.tenantFilter)
            struct Body: Encodable { var job_id: String; var callback_url: String?; var deliveries: [DeliveryDocument] }
            return try JSONResponse.make(Body(job_id: id.description, callback_url: job.callbackURL, deliveries: deliveries.map(DeliveryDocument.init)))
        }
        api.get("webhooks/secret") { request, context in
            let principal = try context.require(.enqueue)
            let tenant = principal.tenant
            var secret = gateway.configuration.webhooks.secrets[tenant]
            if secret == nil { secret = try await gateway.spool.store.webhookSecret(tenant: tenant) }
            struct Body: Encodable { var tenant: String; var secret: String; var scheme: String }
            return try JSONResponse.make(Body(tenant: tenant, secret: secret ?? "", scheme: "standard-webhooks v1 (HMAC-SHA256)"))
        }
    }
}
