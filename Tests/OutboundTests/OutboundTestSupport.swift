import Database
import FilaTestSupport
import Foundation
import Logging
import PostgresNIO
import Primitives
import Queue
import ServiceLifecycle
import Testing

/// What every set-up of these tests has: the test's database and its queue.
protocol DatabaseSetup {
    var url: DatabaseURL { get }
    var client: PostgresClient { get }
    var queue: MessageQueue { get }
}

/// One worker as a process runs it, for tests: its identity, a heartbeat beating every
/// 200 ms, its LISTEN wake-up, polling every 100 ms, and a 200 ms retry backoff.
struct TestWorker {
    let identity = ProcessIdentity(kind: .worker, version: "test")
    let heartbeat: HeartbeatService
    let listener: QueueListener
    let worker: Worker

    init(_ setup: some DatabaseSetup, sender: any MessageSender, concurrency: Int, details: @escaping @Sendable () -> [String: JSONValue] = { [:] }) {
        heartbeat = HeartbeatService(
            client: setup.client, identity: identity, stats: ProcessStats(), interval: .milliseconds(200), details: details, logger: TestDatabase.logger
        )
        let wake = WakeSignal()
        listener = QueueListener(url: setup.url, wake: wake, logger: TestDatabase.logger)
        worker = Worker(
            configuration: .init(
                concurrency: concurrency, batchSize: concurrency, pollInterval: .milliseconds(100),
                retryBackoff: Backoff(base: .milliseconds(200), multiplier: 1, maximum: .milliseconds(200), jitter: .none)
            ),
            queue: setup.queue, sender: sender, heartbeat: heartbeat, wake: wake, logger: TestDatabase.logger
        )
    }

    /// Its services in start order, with `extra` (a breaker sync, a chip roster's) started
    /// after the heartbeat and before the worker.
    func services(_ extra: [any Service] = []) -> [any Service] {
        [heartbeat] + extra + [listener, worker]
    }
}

/// Runs `services` in one group while `body` runs, then shuts them down gracefully.
func whileRunning<Result: Sendable>(_ services: [any Service], _ body: () async throws -> Result) async throws -> Result {
    let group = ServiceGroup(services: services, logger: TestDatabase.logger)
    let task = Task { try await group.run() }
    do {
        let result = try await body()
        await group.triggerGracefulShutdown()
        try await task.value
        return result
    } catch {
        await group.triggerGracefulShutdown()
        try? await task.value
        throw error
    }
}

/// The first column of the first row of `sql`.
func scalar<T: PostgresDecodable & Sendable>(_ setup: some DatabaseSetup, _ type: T.Type, _ sql: String) async throws -> T {
    try await setup.client.query(PostgresQuery(unsafeSQL: sql), logger: TestDatabase.logger).collect().first!.decode(T.self)
}

/// Waits until `condition` holds, checking every 50 ms; records an issue after `seconds`.
func eventually(_ what: String, within seconds: Double = 120, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("timed out waiting until \(what)")
}
