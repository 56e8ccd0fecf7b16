#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import Queue
import Synchronization

/// A sender that sends nothing: it logs and succeeds, for development, tests and
/// benchmarks. Never a default: a worker uses it only when asked (`--sender sandbox`).
///
/// Knobs: a fixed `delay` per send, a `failureRate` of retryable FAILED_PROVIDER failures,
/// and a `recordPath` file to which the id of every successful send is appended, one per
/// line, so tests can prove each message went out exactly once across processes.
public final class SandboxSender: MessageSender {
    public struct Configuration: Sendable {
        public var delay: Duration
        /// 0…1: the share of sends that fail with FAILED_PROVIDER.
        public var failureRate: Double
        public var recordPath: String?

        public init(delay: Duration = .zero, failureRate: Double = 0, recordPath: String? = nil) {
            self.delay = delay
            self.failureRate = failureRate
            self.recordPath = recordPath
        }
    }

    public let name = "sandbox"
    public let configuration: Configuration
    private let recordFile: Int32?
    private let sentCount = Atomic<Int>(0)
    public let metrics: SendMetrics

    public init(configuration: Configuration, metrics: SendMetrics = SendMetrics()) throws(SandboxSenderError) {
        self.configuration = configuration
        self.metrics = metrics
        if let path = configuration.recordPath {
            let descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { throw SandboxSenderError(path: path, errno: errno) }
            recordFile = descriptor
        } else {
            recordFile = nil
        }
    }

    deinit {
        if let recordFile { close(recordFile) }
    }

    /// How many sends succeeded in this process.
    public var sent: Int { sentCount.load(ordering: .relaxed) }

    public func send(_ message: ClaimedMessage, logger: Logger) async -> SendResult {
        if configuration.delay > .zero {
            do {
                try await Task.sleep(for: configuration.delay)
            } catch {
                return .deferred(outcome: .failedWorkerLost, reasonCode: "sandbox:cancelled", until: .zero)
            }
        }
        if configuration.failureRate > 0, Double.random(in: 0..<1) < configuration.failureRate {
            metrics.recordCall(provider: name, outcome: .failedProvider, duration: configuration.delay)
            return .retryableFailure(outcome: .failedProvider, reasonCode: "sandbox:injected_failure", error: "sandbox: injected failure")
        }
        if let recordFile {
            // One write(2) per line with O_APPEND: lines from concurrent processes never interleave.
            var line = message.id.uuidString.lowercased() + "\n"
            line.withUTF8 { bytes in _ = write(recordFile, bytes.baseAddress, bytes.count) }
        }
        sentCount.add(1, ordering: .relaxed)
        metrics.recordCall(provider: name, outcome: .sent, duration: configuration.delay)
        logger.debug("sandbox send", metadata: ["fila.message_id": .stringConvertible(message.id)])
        return .sent(provider: "sandbox", providerMessageID: nil, chipID: nil)
    }
}

public struct SandboxSenderError: Error, CustomStringConvertible {
    public let path: String
    public let errno: Int32
    public var description: String { "cannot open the sandbox record file \(path): \(String(cString: strerror(errno)))" }
}
