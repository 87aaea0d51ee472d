import Foundation
import Hummingbird
import SpoolCore

/// `/v1/jobs`: enqueue, follow, cancel, retry, delete.
struct JobRoutes {
    let gateway: Gateway
    var spool: Spool { gateway.spool }

    /// What `POST /v1/jobs` answers: enough to follow the job.
    struct Accepted: Encodable {
        struct Links: Encodable {
            var `self`: String
            var events: String
        }
        var id: String
        var state: JobState
        var queue: String
        var kind: String
        var created_at: String
        var replayed: Bool
        var links: Links

        init(_ result: EnqueueResult) {
            let id = result.job.id.description
            self.id = id
            state = result.job.state
            queue = result.job.queue
            kind = result.job.kind
            created_at = Timestamp.format(result.job.createdAt)
            replayed = result.replayed
            links = Links(self: "/v1/jobs/\(id)", events: "/v1/jobs/\(id)/events")
        }
    }

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.post("jobs", use: enqueue)
        api.post("jobs/batch", use: enqueueBatch)
        api.get("jobs", use: list)
        api.get("jobs/:id", use: get)
        api.post("jobs/:id/cancel") { request, context in
            let principal = try context.require(.enqueue)
            return try JSONResponse.make(JobDocument(try await spool.cancel(try jobID(context), tenant: principal.tenantFilter)))
        }
        api.post("jobs/:id/retry") { request, context in
            let principal = try context.require(.enqueue)
            return try JSONResponse.make(JobDocument(try await spool.retry(try jobID(context), tenant: principal.tenantFilter)))
        }
        api.delete("jobs/:id") { request, context in
            let principal = try context.require(.enqueue)
            try await spool.store.delete(try jobID(context), tenant: principal.tenantFilter)
            return Response(status: .noContent)
        }
    }

    @Sendable func enqueue(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.enqueue)
        let body = try await request.jsonBody(limit: gateway.configuration.maxBodyBytes)
        let job = try JobRequest.parse(body, tenant: try tenant(of: body, principal), headerKey: request.headers[.idempotencyKey]).job
        try await check(job)
        let result = try await spool.enqueue(job)
        let accepted = Accepted(result)
        if result.replayed {
            return try JSONResponse.make(accepted, status: .ok, headers: [.idempotentReplayed: "true", .location: accepted.links.`self`])
        }
        return try JSONResponse.make(accepted, status: .accepted, headers: [.location: accepted.links.`self`])
    }

    @Sendable func enqueueBatch(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.enqueue)
        let body = try await request.jsonBody(limit: gateway.configuration.maxBodyBytes)
        guard case .object(let object) = body, case .array(let items)? = object["jobs"], object.count == 1 else {
            throw Problem.validation("jobs", "the body must be {\"jobs\": [...]}")
        }
        let limit = gateway.configuration.maxBatchJobs
        guard !items.isEmpty, items.count <= limit else { throw Problem.validation("jobs", "must hold 1 to \(limit) jobs") }
        let jobs = try await parseJobs(items, principal: principal)
        struct Batch: Encodable { var jobs: [Accepted] }
        let results = try await spool.enqueue(jobs)
        return try JSONResponse.make(Batch(jobs: results.map(Accepted.init)), status: .accepted)
    }

    /// The jobs of a batch request, each checked; `ref`s name earlier jobs for `depends_on`.
    func parseJobs(_ items: [JSONValue], principal: Principal) async throws -> [NewJob] {
        var jobs: [NewJob] = []
        var refs: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            do {
                let (job, ref) = try JobRequest.parse(item, tenant: try tenant(of: item, principal), headerKey: nil, refs: refs)
                try await check(job)
                jobs.append(job)
                if let ref { refs[ref] = index }
            } catch var problem as Problem {
                problem.detail = "jobs[\(index)]." + problem.detail
                throw problem
            }
        }
        return jobs
    }

    @Sendable func get(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.read)
        let id = try jobID(context)
        guard let job = try await spool.job(id, tenant: principal.tenantFilter) else { throw Problem.notFound("job \(id) not found") }
        return try JSONResponse.make(JobDocument(job))
    }

    @Sendable func list(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.read)
        let query = request.uri.queryParameters
        var filter = JobFilter(tenant: principal.tenantFilter)
        filter.queue = query["queue"].map(String.init)
        if let asked = query["internal"] {
            guard asked == "true" || asked == "false" else { throw Problem.validation("internal", "must be true or false") }
            filter.includeInternal = asked == "true"
        }
        filter.kind = query["kind"].map(String.init)
        filter.tag = query["tag"].map(String.init)
        filter.idempotencyKey = query["idempotency_key"].map(String.init)
        if let batch = query["batch_id"] {
            guard let id = JobID(String(batch)) else { throw Problem.validation("batch_id", "'\(batch.prefix(64))' is not a batch id") }
            filter.batchID = id
        }
        // Admins see every tenant's jobs and may narrow to one; a tenant's token sees only its own.
        if principal.isAdmin, let tenant = query["tenant"], !tenant.isEmpty { filter.tenant = String(tenant) }
        if let state = query["state"] {
            guard let s = JobState(rawValue: String(state)) else {
                throw Problem.validation("state", "must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            filter.state = s
        }
        return try await page(filter, request)
    }

    /// One page of `filter`'s jobs, at the `limit` and `cursor` of the query.
    func page(_ filter: JobFilter, _ request: Request) async throws -> Response {
        var filter = filter
        let query = request.uri.queryParameters
        if let limit = query["limit"] {
            guard let n = Int(String(limit)), (1...1000).contains(n) else { throw Problem.validation("limit", "must be 1 to 1000") }
            filter.limit = n
        }
        filter.cursor = query["cursor"].map(String.init)
        let page = try await spool.list(filter)
        struct Page: Encodable { var jobs: [JobDocument]; var next_cursor: String? }
        return try JSONResponse.make(Page(jobs: page.jobs.map(JobDocument.init), next_cursor: page.nextCursor))
    }

    /// The tenant a job request is for: the token's. A request naming another tenant is refused
    /// (403), not quietly made the token's; an admin may name any tenant.
    func tenant(of body: JSONValue, _ principal: Principal) throws -> String {
        guard case .object(let fields) = body, let value = fields["tenant"], value != .null else { return principal.tenant }
        guard case .string(let named) = value else { throw Problem.validation("tenant", "must be a string") }
        if named == principal.tenant || principal.isAdmin { return named }
        throw Problem(.forbidden, type: "forbidden", title: "The token belongs to another tenant",
                      detail: "this token acts for tenant '\(principal.tenant)', not '\(named.prefix(128))'")
    }

    /// Refuses jobs this deployment would never run: unknown queues and kinds (the engine's
    /// ``JobAdmission`` rules, the same for the CLI and Swift), payloads that miss their
    /// schema, callback URLs the webhook policy refuses.
    func check(_ job: NewJob) async throws {
        do { try await spool.admit(job) } catch let error as SpoolError { throw Problem.from(error) }
        do { try spool.checkPayload(job) } catch { throw Problem.from(error) }
        if let url = job.callbackURL, let why = gateway.configuration.webhooks.policy.checkLiteral(url) {
            throw Problem.validation("callback_url", "refused: \(why); callbacks may only reach public addresses unless the operator allows it (webhooks.allow_loopback / allow_private_networks)")
        }
    }

    private func jobID(_ context: SpoolRequestContext) throws -> JobID { try context.jobIDParameter() }
}
