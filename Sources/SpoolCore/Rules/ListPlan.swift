/// What a job listing means, for every store: newest first, a page of 1...1000 jobs, and a
/// cursor that is the position (`seq`) of the last job of the previous page. A store turns the
/// plan into one query (`WHERE <equalities> AND seq < after ORDER BY seq DESC LIMIT fetchLimit`)
/// and hands the rows back to ``JobPage/init(rows:plan:)``.
public struct ListPlan: Sendable, Equatable {
    /// Column and value pairs every listed job must match, in a fixed order.
    public var equalities: [Equality]
    /// Only jobs before this position (the previous page's cursor).
    public var before: Int64?
    /// Only jobs whose tags hold this one (the stores render it their own way: tags are JSON).
    public var tag: String?
    /// Not the jobs of this queue (`queue <> ?`).
    public var excludedQueue: String?
    /// Jobs per page.
    public var pageSize: Int
    /// Rows to fetch: one more than a page, to know whether another page follows.
    public var fetchLimit: Int { pageSize + 1 }

    public struct Equality: Sendable, Equatable {
        /// `tenant`, `queue`, `state`, `kind`, `idempotency_key` or `batch_id`: the same column name in both stores.
        public var column: String
        public var value: String
    }

    /// Plans `filter`; a cursor that no page handed out is `invalid`.
    public init(_ filter: JobFilter) throws {
        pageSize = max(1, min(filter.limit, 1000))
        equalities = []
        if let tenant = filter.tenant { equalities.append(Equality(column: "tenant", value: tenant)) }
        if let queue = filter.queue { equalities.append(Equality(column: "queue", value: queue)) }
        if let state = filter.state { equalities.append(Equality(column: "state", value: state.rawValue)) }
        if let kind = filter.kind { equalities.append(Equality(column: "kind", value: kind)) }
        if let key = filter.idempotencyKey { equalities.append(Equality(column: "idempotency_key", value: key)) }
        if let batch = filter.batchID { equalities.append(Equality(column: "batch_id", value: batch.description)) }
        tag = filter.tag
        // Webhook deliveries are Spool's own bookkeeping: listed only when asked for.
        if filter.queue == nil && !filter.includeInternal { excludedQueue = Webhook.queue }
        if let cursor = filter.cursor {
            guard let seq = Int64(cursor), seq > 0 else {
                throw SpoolError.invalid(field: "cursor", reason: "not a cursor from a previous page")
            }
            before = seq
        }
    }
}

extension JobPage {
    /// The page of `rows` (jobs with their position, newest first, at most `plan.fetchLimit`).
    public init(rows: [(job: Job, seq: Int64)], plan: ListPlan) {
        let page = rows.prefix(plan.pageSize)
        self.init(jobs: page.map(\.job), nextCursor: rows.count > plan.pageSize ? page.last.map { String($0.seq) } : nil)
    }
}
