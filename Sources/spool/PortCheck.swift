import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Finds, before anything starts, a listen address another process already has, so that the
/// error says which port and what to do (the server's own bind error comes later and in the
/// socket library's words).
enum PortCheck {
    static func ensureFree(host: String, port: Int) throws {
        guard port > 0 else { return }  // 0: the system picks a free one
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &found) == 0, let info = found else { return }  // the server reports it
        defer { freeaddrinfo(found) }
        let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var on: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) != 0 else { return }
        switch errno {
        case EADDRINUSE:
            throw CLIError("port \(port) on \(host) is already in use (another spool serve, or another program, listens there): stop it, or choose another port with --port, SPOOL_PORT or gateway.port")
        case EACCES:
            throw CLIError("port \(port) on \(host) needs privileges this process lacks: choose a port above 1023 with --port, SPOOL_PORT or gateway.port")
        case EADDRNOTAVAIL:
            throw CLIError("\(host) is not an address of this machine: listen on one of its addresses (--host, SPOOL_HOST or gateway.host)")
        default:
            return
        }
    }
}
