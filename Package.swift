// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Fila",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fila", targets: ["Orchestrator"]),
    ],
    dependencies: [
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-service-context.git", from: "1.5.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Small shared primitives with no domain and no dependency: Duration helpers, backoff
        // and jitter, time limits, wake signals, JSON values.
        .target(name: "Primitives"),
        // The schema: migrations embedded at build time, the runner that applies them,
        // the connection settings every module shares, process heartbeats and the one
        // liveness rule, the LISTEN-with-reconnect loop every listener uses.
        .target(
            name: "Database",
            dependencies: [
                "Primitives",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            plugins: [.plugin(name: "EmbedMigrations")]
        ),
        .target(
            name: "Queue",
            dependencies: [
                "Primitives",
                "Database",
                "Observability",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "Jobs",
            dependencies: [
                .product(name: "Metrics", package: "swift-metrics"),
                "Primitives",
                "Database",
                "Observability",
                "Queue",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Circuit breakers, the transition log and its cross-replica broadcast, the rate
        // limiter (Postgres; Redis over RESP when configured). Knows nothing of WhatsApp.
        .target(
            name: "Resilience",
            dependencies: [
                "Primitives",
                "Database",
                "Observability",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // WhatsApp providers (Evolution API, Z-API), the send pipeline the worker calls, and
        // the sandbox sender.
        .target(
            name: "Outbound",
            dependencies: [
                "Primitives",
                "Database",
                "Queue",
                "Resilience",
                "Observability",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The mechanisms of observability, knowing nothing of messages or WhatsApp: JSON logs,
        // health-check types and their runner, the alert store (state, dedup and cooldown in
        // Postgres), the Slack notifier and the outbox service that delivers alerts, the
        // correlation id and its task-local carrier. Each module builds its own checks and
        // rules from them.
        .target(
            name: "Observability",
            dependencies: [
                "Primitives",
                "Database",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceContextModule", package: "swift-service-context"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "Orchestrator",
            dependencies: [
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                "Primitives",
                "Database",
                "Queue",
                "Jobs",
                "Resilience",
                "Outbound",
                "Observability",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // Build-time embedding of Migrations/*.sql into the Database module.
        .executableTarget(name: "MigrationEmbedder"),
        .plugin(
            name: "EmbedMigrations",
            capability: .buildTool(),
            dependencies: ["MigrationEmbedder"]
        ),

        // Shared by every test target: a fresh migrated database per test, the `fila` binary.
        .target(
            name: "FilaTestSupport",
            dependencies: [
                "Primitives",
                "Database",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "PrimitivesTests",
            dependencies: ["Primitives"]
        ),
        .testTarget(
            name: "DatabaseTests",
            dependencies: ["Database", "FilaTestSupport"]
        ),
        .testTarget(
            name: "QueueTests",
            dependencies: ["Primitives", "Queue", "FilaTestSupport"]
        ),
        .testTarget(
            name: "JobsTests",
            dependencies: ["Primitives", "Jobs", "Observability", "FilaTestSupport", .product(name: "Metrics", package: "swift-metrics")]
        ),
        .testTarget(
            name: "ObservabilityTests",
            dependencies: ["Primitives", "Observability", "FilaTestSupport"]
        ),
        .testTarget(
            name: "ResilienceTests",
            dependencies: [
                "Primitives",
                "Observability",
                "Resilience",
                "FilaTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "OutboundTests",
            dependencies: [
                "Primitives",
                "Outbound",
                "Queue",
                "Resilience",
                "Observability",
                "FilaTestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .testTarget(
            name: "OrchestratorTests",
            dependencies: [
                "Observability",
                "Outbound",
                "Queue",
                "Primitives",
                "Orchestrator",
                "Resilience",
                "FilaTestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
