import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Observability

/// A provider's answer: its status and up to `ProviderHTTP.maximumBodyBytes` of body.
struct ProviderHTTPResponse: Sendable {
    let status: Int
    /// The body as text; empty when `bodyTooLarge`.
    let body: String
    let bodyTooLarge: Bool

    var isSuccess: Bool { (200...299).contains(status) }
}

/// The plumbing both providers share: one JSON POST under a deadline with its body
/// collected, failures mapped to `ProviderError`, and details made safe to store.
enum ProviderHTTP {
    /// A larger answer is not a provider's answer to a text message.
    static let maximumBodyBytes = 1 << 20

    /// POSTs `body` (JSON text) to `url`. The whole exchange, body included, must finish
    /// within `timeout`. Throws `ProviderError` or `CancellationError`.
    ///
    /// `secrets` (keys, tokens) are removed from any error detail; the URL is never logged,
    /// since Z-API's token is part of it.
    static func postJSON(
        _ body: String,
        to url: String,
        headers: HTTPHeaders,
        provider: String,
        timeout: Duration,
        secrets: [String],
        httpClient: HTTPClient,
        logger: Logger
    ) async throws -> ProviderHTTPResponse {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers = headers
        request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        // The message's correlation id (bound by the worker), so the provider's logs and ours meet.
        if let correlationID = Correlation.current {
            request.headers.replaceOrAdd(name: Correlation.headerName, value: correlationID.value)
        }
        request.body = .bytes(ByteBuffer(string: body))
        return try await execute(request, provider: provider, timeout: timeout, secrets: secrets, httpClient: httpClient, logger: logger)
    }

    /// GETs `url` within `timeout`, body included. Throws `ProviderError` or `CancellationError`.
    static func get(
        _ url: String,
        headers: HTTPHeaders,
        provider: String,
        timeout: Duration,
        secrets: [String],
        httpClient: HTTPClient,
        logger: Logger
    ) async throws -> ProviderHTTPResponse {
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        request.headers = headers
        return try await execute(request, provider: provider, timeout: timeout, secrets: secrets, httpClient: httpClient, logger: logger)
    }

    /// Sends `request` within `timeout`, body included, and maps every failure to a
    /// `ProviderError` (or `CancellationError`) with the secrets redacted.
    private static func execute(
        _ request: HTTPClientRequest,
        provider: String,
        timeout: Duration,
        secrets: [String],
        httpClient: HTTPClient,
        logger: Logger
    ) async throws -> ProviderHTTPResponse {
        let clock = ContinuousClock()
        let started = clock.now
        let deadline = started + timeout
        do {
            // No logger for the client: its request logs would carry the URL.
            let response = try await httpClient.execute(request, timeout: TimeAmount(timeout))
            let status = Int(response.status.code)
            // The client's deadline covers the wait for the head only; the body gets the rest.
            let collected = try await collect(response.body, until: deadline)
            logger.debug(
                "provider answered",
                metadata: [
                    "provider": "\(provider)",
                    "http.status": "\(status)",
                    "duration_ms": "\(milliseconds(clock.now - started))",
                ]
            )
            switch collected {
            case .body(let buffer):
                return ProviderHTTPResponse(status: status, body: String(buffer: buffer), bodyTooLarge: false)
            case .tooLarge:
                return ProviderHTTPResponse(status: status, body: "", bodyTooLarge: true)
            }
        } catch {
            let mapped = providerError(for: error, provider: provider, timeout: timeout, secrets: secrets)
            logger.debug(
                "provider call failed",
                metadata: [
                    "provider": "\(provider)",
                    "error": "\(String(reflecting: mapped))",
                    "duration_ms": "\(milliseconds(clock.now - started))",
                ]
            )
            throw mapped
        }
    }

    enum CollectedBody: Sendable {
        case body(ByteBuffer)
        case tooLarge
    }

    private struct BodyDeadlinePassed: Error {}

    static func collect(_ body: HTTPClientResponse.Body, until deadline: ContinuousClock.Instant) async throws -> CollectedBody {
        try await withThrowingTaskGroup(of: CollectedBody?.self) { group in
            group.addTask {
                do {
                    return .body(try await body.collect(upTo: maximumBodyBytes))
                } catch is NIOTooManyBytesError {
                    return .tooLarge
                }
            }
            group.addTask {
                try await Task.sleep(until: deadline, clock: .continuous)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let collected = first else { throw BodyDeadlinePassed() }
            return collected
        }
    }

    /// Maps whatever the call threw to a `ProviderError`; cancellation stays `CancellationError`.
    static func providerError(for error: any Error, provider: String, timeout: Duration, secrets: [String]) -> any Error {
        if error is CancellationError { return error }
        if let error = error as? ProviderError { return error }
        // The client reports a cancelled task in its own words at times.
        if Task.isCancelled { return CancellationError() }
        let timedOut = ProviderError(provider: provider, kind: .timeout, detail: "no complete answer within \(timeout)")
        if error is BodyDeadlinePassed { return timedOut }
        if let error = error as? HTTPClientError {
            // A deadline or read timeout means the request went out and no answer came back.
            // A connect or pool timeout means it never went out: the network's fault.
            if error == .deadlineExceeded || error == .readTimeout { return timedOut }
            return ProviderError(provider: provider, kind: .network, detail: error.shortDescription)
        }
        return ProviderError(provider: provider, kind: .network, detail: safeDetail(String(describing: error), secrets: secrets))
    }

    /// `text` without any of `secrets` (plain or percent-encoded), on one short line.
    /// A provider's message id worth storing: 1–200 printable ASCII characters.
    static func isUsableID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 200 && id.utf8.allSatisfy { (0x21...0x7E).contains($0) }
    }

    static func safeDetail(_ text: String, secrets: [String]) -> String {
        var bytes = Array(text.utf8)
        let needles = secrets.filter { !$0.isEmpty }.flatMap { [$0, pathSegment($0)] }
        let replacement = Array("<redacted>".utf8)
        for needle in needles.map({ Array($0.utf8) }) {
            guard bytes.count >= needle.count else { continue }
            var result: [UInt8] = []
            result.reserveCapacity(bytes.count)
            var index = 0
            while index < bytes.count {
                if bytes.count - index >= needle.count, bytes[index..<(index + needle.count)].elementsEqual(needle) {
                    result.append(contentsOf: replacement)
                    index += needle.count
                } else {
                    result.append(bytes[index])
                    index += 1
                }
            }
            bytes = result
        }
        return ProviderError.shortened(String(decoding: bytes, as: UTF8.self))
    }

    /// `text` percent-encoded as one URL path segment (RFC 3986 unreserved characters kept).
    static func pathSegment(_ text: String) -> String {
        let hex = Array("0123456789ABCDEF".unicodeScalars)
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                result.unicodeScalars.append("%")
                result.unicodeScalars.append(hex[Int(byte >> 4)])
                result.unicodeScalars.append(hex[Int(byte & 0x0F)])
            }
        }
        return result
    }

    /// The base URL without trailing slashes, so paths can be appended.
    static func trimmedBaseURL(_ baseURL: String) -> String {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        return base
    }

    /// The ASCII digits of a phone number: both providers want country code and number only.
    static func digits(_ telefone: String) -> String {
        telefone.filter { $0.isASCII && $0.isNumber }
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
