import Foundation
import SpoolCore
import Synchronization

/// Where services that answer `202 Accepted` report back: the gateway's
/// `POST /v1/service/jobs/{id}/progress|complete|fail`, with the attempt's lease token. The
/// gateway may be another process than the worker that called the service.
public final class ServiceCallbacks: Sendable {
    private let base = Mutex<String?>(nil)

    /// `baseURL`: the gateway's address as services reach it (`gateway.public_url`), or `nil`
    /// until ``useIfUnset(_:)`` gives the local gateway's.
    public init(baseURL: String?) {
        base.withLock { $0 = baseURL.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 } }
    }

    public var baseURL: String? { base.withLock { $0 } }

    /// The local gateway's address, once it listens, unless one was configured.
    public func useIfUnset(_ url: String) { base.withLock { if $0 == nil { $0 = url } } }
}
