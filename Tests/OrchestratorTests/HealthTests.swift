import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import Orchestrator

@Suite("GET /health")
struct HealthTests {
    @Test func answersPassWhileTheProcessIsAlive() async throws {
        let app = Application(router: HTTPServer.makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/health", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/health+json")
                let body = try JSONDecoder().decode(HealthLiveness.self, from: Data(buffer: response.body))
                #expect(body == HealthLiveness(status: "pass", version: FilaVersion.current))
            }
        }
    }

    @Test func unknownPathsAreNotFound() async throws {
        let app = Application(router: HTTPServer.makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/nope", method: .get) { response in
                #expect(response.status == .notFound)
            }
        }
    }
}
