import SpoolCore

/// Reads a client's missed events from the store, one page at a time, until the log's end:
/// however many there are, none is skipped (the SSE and WebSocket resumes both use it).
struct EventReplay {
    let store: any JobStore
    let filter: EventFilter
    /// The seq read through so far.
    private(set) var position: Int64
    private var atEnd = false
    private var pages = 0
    /// Bounds one replay (10 million events); a client still behind after it resumes again.
    static let maxPages = 10_000
    static let pageSize = 1000

    init(store: any JobStore, filter: EventFilter, after: Int64) {
        self.store = store
        self.filter = filter
        self.position = after
    }

    /// The next page of events, or `nil` once the log's end was reached.
    mutating func next() async throws -> [JobEvent]? {
        guard !atEnd, pages < Self.maxPages else { return nil }
        let page = try await store.eventPage(after: position, filter: filter, limit: Self.pageSize)
        pages += 1
        position = max(position, page.next)
        atEnd = page.atEnd
        return page.events
    }

    /// The notice sent when a client resumes from before the oldest stored event: it missed
    /// events that are gone, and gets the current state instead.
    static func prunedNotice(after: Int64, prunedThrough: Int64) -> JSONValue {
        .object([
            "after": .integer(after), "pruned_through": .integer(prunedThrough),
            "detail": .string("events after \(after) up to \(prunedThrough) are past the retention window and were pruned; the current state follows"),
        ])
    }
}
