// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Spool",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SpoolCore", targets: ["SpoolCore"]),
        .library(name: "SpoolSQLite", targets: ["SpoolSQLite"]),
        .library(name: "SpoolPostgres", targets: ["SpoolPostgres"]),
        .library(name: "SpoolGateway", targets: ["SpoolGateway"]),
        .library(name: "SpoolWebhooks", targets: ["SpoolWebhooks"]),
        .library(name: "SpoolTesting", targets: ["SpoolTesting"]),
        .library(name: "SpoolClient", targets: ["SpoolClient"]),
        .executable(name: "spool", targets: ["spool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.24.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
    ],
    targets: [
        // The job model, the store interface and the worker engine. No database code.
        .target(
            name: "SpoolCore",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The embedded store: one SQLite file in WAL mode, with group commit.
        .target(
            name: "SpoolSQLite",
            dependencies: [
                "SpoolCore",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        // The shared store: many gateways and workers on one PostgreSQL database.
        .target(
            name: "SpoolPostgres",
            dependencies: [
                "SpoolCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Signed webhook delivery (Standard Webhooks), run as jobs on the `spool.webhooks` queue.
        .target(
            name: "SpoolWebhooks",
            dependencies: [
                "SpoolCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // The HTTP API: 202 + job id, status, queue control, auth and tenants, metrics, OpenAPI.
        .target(
            name: "SpoolGateway",
            dependencies: [
                "SpoolCore", "SpoolWebhooks",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("openapi.json"), .copy("Dashboard/DashboardFiles")]
        ),
        // For users' tests: run a handler on a payload, see what was enqueued, run a queue to
        // empty, on a temporary store.
        .target(
            name: "SpoolTesting",
            dependencies: ["SpoolCore", "SpoolSQLite", .product(name: "Logging", package: "swift-log")]
        ),
        // The HTTP API for Swift programs, and workers that run handlers over the worker protocol.
        .target(
            name: "SpoolClient",
            dependencies: [
                "SpoolCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Job kinds without code, from the config file: HTTP services and commands.
        .target(
            name: "SpoolKinds",
            dependencies: [
                "SpoolCore", "SpoolWebhooks",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ]
        ),
        // Job kinds for the quick start and the benchmark. Not for production use.
        .target(name: "SpoolDemoJobs", dependencies: ["SpoolCore"]),
        // The `spool` command line: serve, worker, enqueue, ..., bench.
        .executableTarget(
            name: "spool",
            dependencies: [
                "SpoolCore", "SpoolSQLite", "SpoolPostgres", "SpoolDemoJobs", "SpoolGateway", "SpoolWebhooks", "SpoolClient", "SpoolKinds",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // A minimal program that embeds Spool as a Swift library.
        .executableTarget(
            name: "HelloSpool",
            dependencies: [
                "SpoolCore", "SpoolSQLite",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Examples/HelloSpool"
        ),
        .testTarget(
            name: "SpoolTests",
            // `spool` is built for the tests that run it as a child process.
            dependencies: [
                "SpoolCore", "SpoolSQLite", "SpoolPostgres", "SpoolDemoJobs", "SpoolGateway", "SpoolWebhooks", "SpoolTesting", "SpoolClient", "SpoolKinds", "spool",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
