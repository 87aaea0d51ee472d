import Foundation
import Hummingbird
import SpoolCore

/// `/v1/batches`: a group of jobs with a callback job (and webhook) when all have finished.
///
/// ```json
/// POST /v1/batches
/// {"jobs": [{...job...}], "callback": {"queue": "q", "kind": "k", "payload": {...}},
///  "on_failure": {"queue": "q", "kind": "k"}, "callback_url": "https://...", "open": false}
/// ```
struct BatchRoutes {
    let gateway: Gateway
    var spool: Spool { gateway.spool }

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.post("batches", use: create)
        api.get("batches/:id") { _, context in
            let principal = try context.require(.read)
            let id = try context.batchIDParameter()
            guard let batch = try await spool.batch(id, tenant: principal.tenantFilter) else { throw Problem.notFound("batch \(id) not found") }
            return try JSONResponse.make(BatchDocument(batch))
        }
        api.get("batches/:id/jobs") { request, context in
            let principal = try context.require(.read)
            let id = try context.batchIDParameter()
            guard try await spool.batch(id, tenant: principal.tenantFilter) != nil else { throw Problem.notFound("batch \(id) not found") }
            return try await JobRoutes(gateway: gateway).page(JobFilter(tenant: principal.tenantFilter, batchID: id), request)
        }
        api.post("batches/:id/jobs") { request, context in
            let principal = try context.require(.enqueue)
            let id = try context.batchIDParameter()
            guard let batch = try await spool.batch(id, tenant: principal.tenantFilter) else { throw Problem.notFound("batch \(id) not found") }
            let items = try await jobItems(request)
            // The batch's tenant's jobs (an admin adds to any tenant's batch).
            let jobs = try await JobRoutes(gateway: gateway).parseJobs(items, principal: principal).map { job in
                var job = job
                job.tenant = batch.tenant
                return job
            }
            struct Added: Encodable { var jobs: [JobRoutes.Accepted] }
            let results = try await spool.addToBatch(id, jobs: jobs)
            return try JSONResponse.make(Added(jobs: results.map(JobRoutes.Accepted.init)), status: .accepted)
        }
        api.post("batches/:id/close") { _, context in
            let principal = try context.require(.enqueue)
            return try JSONResponse.make(BatchDocument(try await spool.closeBatch(try context.batchIDParameter(), tenant: principal.tenantFilter)))
        }
        api.post("batches/:id/cancel") { _, context in
            let principal = try context.require(.enqueue)
            return try JSONResponse.make(BatchDocument(try await spool.cancelBatch(try context.batchIDParameter(), tenant: principal.tenantFilter)))
        }
    }

    @Sendable func create(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.enqueue)
        let body = try await request.jsonBody(limit: gateway.configuration.maxBodyBytes)
        guard case .object(let object) = body else { throw Problem.validation("body", "must be a JSON object") }
        let allowed: Set<String> = ["jobs", "callback", "on_failure", "callback_url", "open"]
        if let unknown = object.keys.filter({ !allowed.contains($0) }).sorted().first { throw Problem.validation(unknown, "unknown field") }
        var batch = NewBatch(tenant: principal.tenant)
        batch.callback = try await callback(object, "callback")
        batch.onFailure = try await callback(object, "on_failure")
        batch.callbackURL = try JobRequest.string(object, "callback_url")
        switch object["open"] {
        case nil, .null?: break
        case .bool(let open)?: batch.open = open
        default: throw Problem.validation("open", "must be true or false")
        }
        if let url = batch.callbackURL, let why = gateway.configuration.webhooks.policy.checkLiteral(url) {
            throw Problem.validation("callback_url", "refused: \(why); callbacks may only reach public addresses unless the operator allows it (webhooks.allow_loopback / allow_private_networks)")
        }
        var items: [JSONValue] = []
        switch object["jobs"] {
        case nil, .null?: guard batch.open else { throw Problem.validation("jobs", "a batch that is not open needs jobs") }
        case .array(let list)?: items = list
        default: throw Problem.validation("jobs", "must be an array of jobs")
        }
        guard items.count <= gateway.configuration.maxBatchJobs else {
            throw Problem.validation("jobs", "at most \(gateway.configuration.maxBatchJobs) jobs per request; add more with POST /v1/batches/{id}/jobs")
        }
        let jobs = try await JobRoutes(gateway: gateway).parseJobs(items, principal: principal)
        if jobs.contains(where: { $0.batchID != nil }) { throw Problem.validation("jobs", "a job of a new batch cannot name another batch") }
        let (created, results) = try await spool.createBatch(batch, jobs: jobs)
        struct Created: Encodable { var batch: BatchDocument; var jobs: [JobRoutes.Accepted] }
        return try JSONResponse.make(Created(batch: BatchDocument(created), jobs: results.map(JobRoutes.Accepted.init)),
                                     status: .accepted, headers: [.location: "/v1/batches/\(created.id)"])
    }

    private func callback(_ object: [String: JSONValue], _ field: String) async throws -> BatchCallback? {
        guard let value = object[field], value != .null else { return nil }
        guard case .object(let fields) = value, case .string(let kind)? = fields["kind"] else {
            throw Problem.validation(field, "must be {\"queue\": ..., \"kind\": ..., \"payload\": ...}")
        }
        if let unknown = fields.keys.filter({ !["queue", "kind", "payload"].contains($0) }).sorted().first {
            throw Problem.validation("\(field).\(unknown)", "unknown field")
        }
        var queue = "default"
        if let q = fields["queue"] {
            guard case .string(let name) = q else { throw Problem.validation("\(field).queue", "must be a string") }
            queue = name
        }
        let probe = NewJob(queue: queue, kind: kind, payload: (fields["payload"] ?? .object([:])).jsonData)
        do { try await JobRoutes(gateway: gateway).check(probe) } catch var problem as Problem {
            problem.detail = "\(field)." + problem.detail
            throw problem
        }
        return BatchCallback(queue: queue, kind: kind, payload: fields["payload"])
    }

    private func jobItems(_ request: Request) async throws -> [JSONValue] {
        let body = try await request.jsonBody(limit: gateway.configuration.maxBodyBytes)
        guard case .object(let object) = body, case .array(let items)? = object["jobs"], object.count == 1 else {
            throw Problem.validation("jobs", "the body must be {\"jobs\": [...]}")
        }
        let limit = gateway.configuration.maxBatchJobs
        guard !items.isEmpty, items.count <= limit else { throw Problem.validation("jobs", "must hold 1 to \(limit) jobs") }
        return items
    }
}
