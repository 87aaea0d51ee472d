import Foundation

/// Something that happened to a job: a state change, progress, or its deletion.
///
/// Events are numbered by the store in commit order (`seq` only grows), kept for a retention
/// window, and pushed to subscribers (Server-Sent Events, WebSocket, webhooks). A client that
/// lost its connection resumes with the last `seq` it saw.
public struct JobEvent: Sendable, Hashable {
    public enum Kind: String, Sendable, Codable {
        /// The job entered `state`.
        case state
        /// The handler reported progress.
        case progress
        /// The job was deleted (by hand, or purged from its queue).
        case deleted
    }

    public var seq: Int64
    public var type: Kind
    public var jobID: JobID
    public var tenant: String
    public var queue: String
    public var kind: String
    /// The state entered (for `state` events).
    public var state: JobState?
    public var attempt: Int
    public var progress: JobProgress?
    /// The error of the attempt that just failed (for retries and `failed`).
    public var error: AttemptError?
    /// The result, as JSON text (for `completed`).
    public var result: Data?
    public var at: Date

    public init(seq: Int64 = 0, type: Kind, jobID: JobID, tenant: String, queue: String, kind: String, state: JobState?,
                attempt: Int, progress: JobProgress? = nil, error: AttemptError? = nil, result: Data? = nil, at: Date = Date()) {
        self.seq = seq; self.type = type; self.jobID = jobID; self.tenant = tenant; self.queue = queue; self.kind = kind
        self.state = state; self.attempt = attempt; self.progress = progress; self.error = error; self.result = result; self.at = at
    }

    /// Whether this event ends the job's story (a terminal state, or deletion).
    public var isTerminal: Bool { type == .deleted || (type == .state && state?.isFinished == true) }

    /// The event as clients receive it.
    public var document: JSONValue {
        var o: [String: JSONValue] = [
            "seq": .number(Double(seq)), "type": .string(type.rawValue), "job_id": .string(jobID.description),
            "queue": .string(queue), "kind": .string(kind), "attempt": .number(Double(attempt)),
            "at": .string(Timestamp.format(at)),
        ]
        if let state { o["state"] = .string(state.rawValue) }
        if let progress {
            o["progress"] = .object(["percent": .number(progress.percent), "message": progress.message.map(JSONValue.string) ?? .null])
        }
        if let error {
            o["error"] = .object(["attempt": .number(Double(error.attempt)), "message": .string(error.message),
                                  "reason": .string(error.reason), "at": .string(Timestamp.format(error.at))])
        }
        if let result { o["result"] = JSONValue(json: result) ?? .null }
        return .object(o)
    }
}
