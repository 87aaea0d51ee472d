import Foundation
import Hummingbird
import SpoolCore

/// `GET /v1/kinds`: the job kinds this gateway knows, how they run, the queues that accept
/// them and their payload schemas, so that a client can see what it may enqueue.
struct KindRoutes {
    let gateway: Gateway

    struct KindDocument: Encodable {
        var kind: String
        /// `http` or `command` (declared in the config file), `swift` (a handler in this
        /// process), `remote` (run by workers in the registry: `spool worker` processes and remote workers), or `elsewhere`
        /// (named in the config only: run by another process).
        var runs: String
        var queues: [String]
        var payload_schema: JSONValue?
    }

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.get("kinds") { _, context in
            _ = try context.require(.read)
            struct List: Encodable { var kinds: [KindDocument] }
            return try JSONResponse.make(List(kinds: documents()))
        }
    }

    func documents() -> [KindDocument] {
        let spool = gateway.spool, admission = spool.configuration.admission
        let registered = spool.ownKinds
        let remote = spool.announcedKinds
        let schemas = spool.payloadSchemas
        var kinds = registered.union(schemas.keys).union(remote.values.joined())
        for listed in admission.kinds.values { kinds.formUnion(listed) }
        let queues = Set(["default"] + spool.configuration.queues.keys + admission.kinds.keys + admission.queues)
            .filter { $0 != Webhook.queue }.sorted()
        return kinds.sorted().map { kind in
            // (A kind declared in the config only for its schema may still have a Swift handler here.)
            let declared = admission.declaredKinds[kind].flatMap { $0 == "elsewhere" ? nil : $0 }
            let runs = declared ?? (registered.contains(kind) ? "swift" : remote.values.contains { $0.contains(kind) } ? "remote" : "elsewhere")
            let accepting = queues.filter { queue in gateway.acceptedKinds(queue: queue).map { $0.contains(kind) } ?? true }
            return KindDocument(kind: kind, runs: runs, queues: accepting, payload_schema: schemas[kind]?.document)
        }
    }
}
