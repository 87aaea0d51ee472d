import Foundation

/// The gateway's files (the OpenAPI document, the dashboard) ship as SwiftPM resources: the
/// `Spool_SpoolGateway.resources` folder next to the binary. SwiftPM's `Bundle.module` stops
/// the process when that folder is missing (a binary copied alone); this lookup answers `nil`
/// instead, and the routes that need the files say so.
enum Resources {
    static let bundle: Bundle? = {
        // (`.resources` on Linux, `.bundle` on macOS.)
        for name in ["Spool_SpoolGateway.resources", "Spool_SpoolGateway.bundle"] {
            let beside = Bundle.main.bundleURL.appendingPathComponent(name).path
            if FileManager.default.fileExists(atPath: beside) { return Bundle(path: beside) }
        }
        // Run from the build folder (tests, `swift run`): SwiftPM's accessor knows where it is.
        if CommandLine.arguments.first?.contains("/.build/") == true { return Bundle.module }
        return nil
    }()

    static let missing = "the gateway's resources (Spool_SpoolGateway.resources) are not next to the spool binary: install them with it"
}
