/// What kind of failure a call met (seed T02.3). The kind decides whether it counts toward
/// opening the breaker.
public enum ErrorType: String, Sendable, Hashable, CaseIterable {
    /// No answer in time. Not counted: a slow network is not a dead provider, and the
    /// message is retried anyway. Logged.
    case timeout
    /// Refused, reset, DNS, TLS: counted.
    case network
    /// HTTP 5xx: counted.
    case serverError = "server_5xx"
    /// HTTP 4xx other than a recipient rejection (401, 403, 404, 429 …): counted, because
    /// a bad key or a missing instance will not fix itself and must not be hammered.
    case clientError = "client_4xx"
    /// The provider answered that this one recipient cannot be reached (Evolution's 400
    /// "number not on WhatsApp"): about the number, not the provider, so not counted either
    /// way (and Evolution's lookups have false negatives, so it is no proof of health).
    case recipient
    /// The caller gave up (shutdown): says nothing about the provider.
    case cancelled
    /// Anything unclassified: counted, to be safe.
    case unknown

    /// The kind of an HTTP status that is not a success.
    public static func forHTTPStatus(_ status: Int) -> ErrorType {
        switch status {
        case 500...599: return .serverError
        case 400...499: return .clientError
        default: return .unknown
        }
    }

    /// How the breaker treats a call that failed this way.
    public var classification: CallClassification {
        switch self {
        case .network, .serverError, .clientError, .unknown: return .failure
        case .timeout, .cancelled, .recipient: return .ignored
        }
    }
}

/// How a finished call counts for the breaker.
public enum CallClassification: Sendable, Hashable {
    /// Counts toward opening.
    case failure
    /// Neither failure nor success.
    case ignored
}

/// An error that knows its kind: providers' errors conform, refining the default (an HTTP
/// 400 that is really a per-recipient rejection, say).
public protocol ClassifiedError: Error {
    var errorType: ErrorType { get }
}

/// Maps an error thrown through a breaker to its kind.
public struct ErrorClassifier: Sendable {
    private let body: @Sendable (any Error) -> ErrorType

    public init(_ body: @escaping @Sendable (any Error) -> ErrorType) {
        self.body = body
    }

    public func classify(_ error: any Error) -> ErrorType { body(error) }

    /// `ClassifiedError`s say their own kind; cancellation is `.cancelled`; anything else
    /// is `.unknown` (counted).
    public static let standard = ErrorClassifier { error in
        if let classified = error as? any ClassifiedError { return classified.errorType }
        if error is CancellationError { return .cancelled }
        return .unknown
    }
}
