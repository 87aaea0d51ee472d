import Hummingbird
import SpoolCore

extension SpoolRequestContext {
    /// The `{id}` of the path as a job id; 404 when it is not one (nothing could be found).
    func jobIDParameter() throws -> JobID {
        let raw = parameter("id")
        guard let id = JobID(raw.lowercased()) else { throw Problem.notFound("'\(raw.prefix(64))' is not a job id") }
        return id
    }

    /// The `{name}` of the path as a queue name; 404 when it cannot be one.
    func queueParameter() throws -> String {
        let name = parameter("name")
        guard NewJob.isValidName(name) else { throw Problem.notFound("'\(name.prefix(64))' is not a queue name") }
        return name
    }

    /// The `{id}` of the path as a batch id; 404 when it is not one.
    func batchIDParameter() throws -> JobID {
        let raw = parameter("id")
        guard let id = JobID(raw.lowercased()) else { throw Problem.notFound("'\(raw.prefix(64))' is not a batch id") }
        return id
    }

    /// The `{key}` of the path as a name (a topic, a subscriber); 404 when it cannot be one.
    func nameParameter(_ key: String, _ what: String) throws -> String {
        let name = parameter(key)
        guard NewJob.isValidName(name) else { throw Problem.notFound("'\(name.prefix(64))' is not a \(what) name") }
        return name
    }

    /// A path parameter, percent-decoded (`E0A%3AMU` is the queue `E0A:MU`).
    private func parameter(_ key: String) -> String {
        let raw = parameters.get(key) ?? ""
        return raw.removingPercentEncoding ?? raw
    }
}
