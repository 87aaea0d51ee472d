import Foundation
import Hummingbird
import SpoolCore

/// `/v1/queues`: counts, and the operator's switches.
struct QueueRoutes {
    let gateway: Gateway
    var spool: Spool { gateway.spool }

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.get("queues") { request, context in
            let principal = try context.require(.read)
            struct List: Encodable { var queues: [QueueDocument] }
            return try JSONResponse.make(List(queues: try await spool.queueOverview(tenant: principal.tenantFilter)))
        }
        api.get("queues/:name") { request, context in
            let principal = try context.require(.read)
            return try JSONResponse.make(try await document(try await name(context), tenant: principal.tenantFilter))
        }
        api.post("queues/:name/pause") { request, context in
            _ = try context.require(.admin)
            let queue = try await name(context)
            try await spool.pause(queue: queue)
            return try JSONResponse.make(try await document(queue, tenant: nil))
        }
        api.post("queues/:name/resume") { request, context in
            _ = try context.require(.admin)
            let queue = try await name(context)
            try await spool.resume(queue: queue)
            return try JSONResponse.make(try await document(queue, tenant: nil))
        }
        api.post("queues/:name/retry-failed") { request, context in
            _ = try context.require(.admin)
            struct Retried: Encodable { var queue: String; var retried: Int }
            let queue = try await name(context)
            return try JSONResponse.make(Retried(queue: queue, retried: try await spool.retryFailed(queue: queue)))
        }
        api.post("queues/:name/purge") { request, context in
            _ = try context.require(.admin)
            struct Purged: Encodable { var queue: String; var purged: Int }
            let queue = try await name(context)
            return try JSONResponse.make(Purged(queue: queue, purged: try await spool.purge(queue: queue)))
        }
    }

    /// A queue the deployment knows, or one that holds jobs; 404 otherwise.
    private func document(_ queue: String, tenant: String?) async throws -> QueueDocument {
        guard let document = try await spool.queueOverview(tenant: tenant).first(where: { $0.name == queue }) else {
            throw Problem.notFound("queue '\(queue)' not found")
        }
        return document
    }

    /// The queue named in the path, which must exist: configured, or holding jobs (404 otherwise).
    private func name(_ context: SpoolRequestContext) async throws -> String {
        do { return try await spool.existingQueue(try context.queueParameter()) } catch let error as SpoolError { throw Problem.from(error) }
    }
}
