import Foundation
import SpoolCore

/// How job events are kept in `event_log`: a JSON array per committed transaction.
enum EventLog {
    /// Events per row; an event's seq is `row << 16 | index`.
    static let perRow = 1 << 16

    static func seq(row: Int64, index: Int) -> Int64 { row << 16 | Int64(index) }
    static func row(of seq: Int64) -> Int64 { seq >> 16 }

    /// Appends an event as a JSON object. Names (tenant, queue, kind) are validated to
    /// `[A-Za-z0-9_.:-]`, ids are hex, so only the message of progress and errors needs escaping.
    static func append(_ event: JobEvent, to text: inout String) {
        text += "{\"j\":\"\(event.jobID)\",\"t\":\"\(event.tenant)\",\"q\":\"\(event.queue)\",\"k\":\"\(event.kind)\""
        text += ",\"y\":\"\(event.type.rawValue)\",\"a\":\(event.attempt),\"at\":\(Rows.micros(event.at))"
        if let state = event.state { text += ",\"s\":\"\(state.rawValue)\"" }
        if let p = event.progress {
            text += ",\"p\":\(p.percent)"
            if let m = p.message { text += ",\"m\":" + quoted(m) }
        }
        if let e = event.error, let json = try? JSON.encode(e) { text += ",\"e\":" + String(decoding: json, as: UTF8.self) }
        if let r = event.result { text += ",\"r\":" + String(decoding: r, as: UTF8.self) }
        text += "}"
    }

    private static func quoted(_ s: String) -> String {
        (try? JSON.encode(s)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
    }

    /// The stored form, decoded.
    private struct Stored: Decodable {
        var j: String, t: String, q: String, k: String, y: String, a: Int, at: Int64
        var s: String?, p: Double?, m: String?, e: AttemptError?, r: JSONValue?
    }

    /// The events of one row, numbered.
    static func decode(row: Int64, text: String) throws -> [JobEvent] {
        let stored = try JSON.decode([Stored].self, from: Data(text.utf8))
        return stored.enumerated().compactMap { index, e in
            guard let id = JobID(e.j), let type = JobEvent.Kind(rawValue: e.y) else { return nil }
            return JobEvent(
                seq: seq(row: row, index: index), type: type, jobID: id, tenant: e.t, queue: e.q, kind: e.k,
                state: e.s.flatMap(JobState.init(rawValue:)), attempt: e.a,
                progress: e.p.map { JobProgress(percent: $0, message: e.m) }, error: e.e,
                result: e.r.map(\.jsonData), at: Rows.date(e.at))
        }
    }
}
