import ArgumentParser
import Foundation
import SpoolCore

struct Enqueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Enqueue a job; prints its status document.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var durability: DurabilityOption
    @Option(help: "Queue name.") var queue = "default"
    @Option(help: "Job kind (which handler runs it), e.g. demo.sleep.") var kind: String
    @Option(help: "Payload as JSON text.") var payload = "{}"
    @Option(help: "Priority, -1000 to 1000; higher runs first.") var priority = 0
    @Option(help: "Run no earlier than this many seconds from now.") var delay: Double?
    @Option(help: "Attempts before the job fails for good.") var maxAttempts: Int?
    @Option(help: "Timeout of one attempt, in seconds.") var timeout: Double?
    @Option(help: "Idempotency key: the same key returns the same job.") var idempotencyKey: String?
    @Option(help: "Tenant that owns the job.") var tenant = NewJob.defaultTenant
    @Option(help: "Tag (repeatable).") var tag: [String] = []
    @Option(help: "Webhook URL called (signed) when the job completes, fails or is cancelled.") var callbackURL: String?
    @Option(help: "A parent job it waits for (repeatable).") var dependsOn: [String] = []
    @Option(help: "When a parent fails for good or is cancelled: cancel (this job too) or run (anyway).") var onParentFailure = "cancel"
    @Option(help: "An open batch the job joins.") var batch: String?
    @Flag(help: "Follow the job live until it finishes (like `spool watch`); exit 1 if it fails, 2 if cancelled.") var wait = false

    func run() async throws {
        guard let policy = ParentFailurePolicy(rawValue: onParentFailure) else {
            throw ValidationError("--on-parent-failure must be 'cancel' or 'run'")
        }
        var job = NewJob(
            queue: queue, kind: kind, payload: Data(payload.utf8), priority: priority,
            runAt: delay.map { Date().addingTimeInterval($0) }, maxAttempts: maxAttempts,
            timeout: timeout.map { .seconds(fractional: $0) }, idempotencyKey: idempotencyKey,
            callbackURL: callbackURL, tags: tag, tenant: tenant)
        job.dependsOn = try dependsOn.map { .job(try parseJobID($0)) }
        job.onParentFailure = policy
        job.batchID = try batch.map(parseJobID)
        let state: JobState
        do {
            let backend = try await store.backend(durability: durability)
            let document = try await backend.enqueue(job)
            guard wait else { return try printJSON(document) }
            guard let id = JobID(document.id) else { throw CLIError("the server answered a bad job id") }
            FileHandle.standardError.write(Data("enqueued \(id)\n".utf8))
            state = try await JobWatcher(backend: backend).watch(id)
        } catch { throw explain(error) }
        if let code = JobWatcher.exitCode(state) { throw ExitCode(code) }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a job's status document.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "Job id.") var id: String
    func run() async throws {
        let id = try parseJobID(id)
        do { try printJSON(try await store.backend().job(id)) } catch { throw explain(error) }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List jobs, newest first.")
    @OptionGroup var store: StoreOptions
    @Option(help: "Only this queue.") var queue: String?
    @Option(help: "Only this state: waiting, scheduled, pending, processing, completed, failed, cancelled.") var state: String?
    @Option(help: "Only this kind.") var kind: String?
    @Option(help: "Only the jobs of this batch.") var batch: String?
    @Flag(name: .customLong("internal"), help: "Also list Spool's own webhook delivery jobs (queue spool.webhooks).") var includeInternal = false
    @Option(help: "Page size (1-1000).") var limit = 50
    @Option(help: "Cursor from the previous page.") var cursor: String?
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        var jobState: JobState?
        if let state {
            guard let s = JobState(rawValue: state) else { throw ValidationError("unknown state '\(state)'") }
            jobState = s
        }
        let page: (jobs: [JobDocument], next: String?)
        let batchID = try batch.map(parseJobID)
        var filter = JobFilter(queue: queue, state: jobState, kind: kind, batchID: batchID, limit: limit, cursor: cursor)
        filter.includeInternal = includeInternal
        do { page = try await store.backend().list(filter) }
        catch { throw explain(error) }
        if json {
            struct Page: Encodable { var jobs: [JobDocument]; var next_cursor: String? }
            try printJSON(Page(jobs: page.jobs, next_cursor: page.next))
            return
        }
        var rows = [["ID", "STATE", "QUEUE", "KIND", "ATTEMPT", "PROGRESS", "CREATED"]]
        for job in page.jobs {
            rows.append([job.id, job.state.rawValue, job.queue, job.kind, "\(job.attempt)/\(job.max_attempts)",
                         job.progress.map { String(format: "%.1f%%", $0.percent) } ?? "-", job.created_at])
        }
        printTable(rows)
        if let next = page.next { print("more: --cursor \(next)") }
    }
}

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a job that has not finished (a running one is asked to stop).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var durability: DurabilityOption
    @Argument(help: "Job id.") var id: String
    func run() async throws { try await changeJob(id, store, durability) { try await $0.cancel($1) } }
}

struct Retry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Put a failed or cancelled job back in its queue.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var durability: DurabilityOption
    @Argument(help: "Job id.") var id: String
    func run() async throws { try await changeJob(id, store, durability) { try await $0.retry($1) } }
}

/// Applies `change` to one job and prints the job as it is afterwards.
private func changeJob(_ id: String, _ store: StoreOptions, _ durability: DurabilityOption, _ change: (any Backend, JobID) async throws -> JobDocument) async throws {
    let id = try parseJobID(id)
    do { try printJSON(try await change(try await store.backend(durability: durability), id)) } catch { throw explain(error) }
}
