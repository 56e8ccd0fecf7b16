import AsyncHTTPClient
import Database
import FilaTestSupport
import Logging
import NIOCore
import NIOHTTP1
import Observability
import Primitives
import Testing

@testable import Outbound

private let logger = Logger(label: "fila.test.outbound")
private let evolutionKey = "evo-secret-6f1c2a9d"
private let zapiToken = "zapi-token-93be1f07"
private let zapiClientToken = "zapi-client-token-5d2e"
private let telefone = "5511999990001"
private let texto = "Olá, sua consulta é amanhã às 9h"

@Suite("Evolution provider against the fake Evolution API", .timeLimit(.minutes(2)))
struct EvolutionProviderTests {
    @Test func aSendReturnsTheKeyIDAndTheFakeGetsNumberTextAndKey() async throws {
        try await withFakeEvolution { fake, client in
            let receipt = try await evolution(fake, client).sendText(to: telefone, text: texto, logger: logger)

            let sent = try #require(fake.sentTexts.first)
            #expect(fake.sentTexts.count == 1)
            #expect(receipt == ProviderReceipt(provider: "evolution", messageID: sent.messageID))
            #expect(receipt.messageID.hasPrefix("3EB0"))
            #expect(sent.number == telefone)
            #expect(sent.text == texto)
            let request = try #require(fake.requests.first)
            #expect(request.method == "POST")
            #expect(request.path == "/message/sendText/fila-test")
            #expect(request.header("apikey") == evolutionKey)
            #expect(request.header("content-type") == "application/json")
            #expect(request.number == telefone)
            #expect(request.text == texto)
        }
    }

    @Test func aWrongKeyIs401() async throws {
        try await withFakeEvolution { fake, client in
            let error = await sendFailure(evolution(fake, client, apiKey: "not-the-key"))
            #expect(error?.kind == .http(status: 401))
            #expect(error?.reasonCode == "evolution:http_401")
            #expect(error?.detail == "Unauthorized")
            #expect(fake.sentTexts.isEmpty)
        }
    }

    @Test func anUnknownInstanceIs404() async throws {
        try await withFakeEvolution { fake, client in
            let error = await sendFailure(evolution(fake, client, instance: "no-such-instance"))
            #expect(error?.kind == .http(status: 404))
            #expect(error?.detail == #"The "no-such-instance" instance does not exist"#)
            #expect(fake.sentTexts.isEmpty)
        }
    }

    @Test func aNumberNotOnWhatsAppIsARecipientRejection() async throws {
        try await withFakeEvolution { fake, client in
            fake.numbersNotOnWhatsApp = ["5511900000000"]
            let error = await sendFailure(evolution(fake, client), to: "5511900000000")
            #expect(error?.kind == .recipientRejected)
            #expect(error?.reasonCode == "evolution:number_not_on_whatsapp")
            #expect(fake.sendAttempts == 1)
            #expect(fake.sentTexts.isEmpty)
        }
    }

    @Test func aClosedWhatsAppConnectionIs500() async throws {
        try await withFakeEvolution { fake, client in
            fake.mode = .connectionClosed
            let error = await sendFailure(evolution(fake, client))
            #expect(error?.kind == .http(status: 500))
            #expect(error?.detail.contains("Connection Closed") == true)
            #expect(error?.description == "evolution: HTTP 500: Connection Closed")
            #expect(error?.reasonCode == "evolution:http_500")
        }
    }

    @Test func aSlowAnswerIsATimeout() async throws {
        try await withFakeEvolution { fake, client in
            // A first send, with time to spare, opens the pooled connection, so the slow one
            // surely reaches the fake however loaded the machine.
            _ = try await evolution(fake, client, timeout: .seconds(10)).sendText(to: "5511999990000", text: "primeira", logger: Logger(label: "test"))
            fake.latency = .seconds(3)
            let error = await sendFailure(evolution(fake, client, timeout: .milliseconds(500)))
            #expect(error?.kind == .timeout)
            #expect(error?.reasonCode == "evolution:timeout")
            #expect(fake.sendAttempts == 2)
        }
    }

    @Test func anOutageIsANetworkError() async throws {
        try await withFakeEvolution { fake, client in
            let provider = evolution(fake, client)
            // A first send leaves a keep-alive connection that the outage must close too.
            _ = try await provider.sendText(to: telefone, text: texto, logger: logger)
            fake.mode = .outage
            let error = await sendFailure(provider)
            #expect(error?.kind == .network)
            #expect(error?.reasonCode == "evolution:network")
            #expect(fake.sentTexts.count == 1)
        }
    }

    @Test func theKeyNeverAppearsInAnError() async throws {
        try await withFakeEvolution { fake, client in
            let provider = evolution(fake, client)
            fake.mode = .status(500, body: #"{"status":500,"error":"Internal Server Error","response":{"message":["bad apikey \#(evolutionKey)"]}}"#)
            let echoedResult = await sendFailure(provider)
            let echoed = try #require(echoedResult)
            fake.mode = .status(502, body: "<html>upstream rejected apikey=\(evolutionKey)</html>")
            let htmlResult = await sendFailure(provider)
            let html = try #require(htmlResult)
            fake.mode = .outage
            let outageResult = await sendFailure(provider)
            let outage = try #require(outageResult)

            #expect(echoed.detail == "bad apikey <redacted>")
            for error in [echoed, html, outage] {
                #expect(!error.description.contains(evolutionKey))
                #expect(!error.detail.contains(evolutionKey))
                #expect(!error.reasonCode.contains(evolutionKey))
                #expect(!error.description.contains(texto))
            }
        }
    }

    @Test(arguments: [
        (#"{"number":5511999990001,"text":"Olá"}"#, #"[["Invalid format"]]"#),
        (#"{"number":"5511999990001","textMessage":{"text":"Olá"}}"#, #"[["instance requires property \"text\""]]"#),
        (#"{"number":"5511999990001","text":"  "}"#, #"["Text is required"]"#),
    ])
    func theFakeRejectsAnInvalidV2Body(body: String, message: String) async throws {
        try await withFakeEvolution { fake, client in
            var request = HTTPClientRequest(url: fake.baseURL + "/message/sendText/" + fake.instance)
            request.method = .POST
            request.headers.add(name: "apikey", value: fake.apiKey)
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))

            let response = try await client.execute(request, timeout: .seconds(5))
            let answer = try await response.body.collect(upTo: 1 << 20)

            #expect(response.status.code == 400)
            #expect(String(buffer: answer) == #"{"status":400,"error":"Bad Request","response":{"message":"# + message + "}}")
            #expect(fake.sendAttempts == 1)
            #expect(fake.sentTexts.isEmpty)
        }
    }

    /// With the providers' own client, a refused connection fails the call at once as a
    /// network error (counted by the breaker). AsyncHTTPClient's default would keep trying
    /// to connect for the whole connect timeout (30 s here) on every message, while the
    /// breaker waits for its failures.
    @Test func aRefusedConnectionFailsAtOnceAsANetworkError() async throws {
        // A port nothing listens on: a fake started and shut down.
        let fake = try await FakeEvolution.start()
        let url = fake.baseURL
        await fake.shutdown()
        let http = ProviderHTTPClient(connectTimeout: .seconds(30))
        let provider = EvolutionProvider(configuration: .init(baseURL: url, apiKey: evolutionKey, instance: "i", timeout: .seconds(60)), httpClient: http.client)
        let error = try await withTimeLimit(.seconds(10), onTimeout: { TestSetupError("the call kept trying to connect instead of failing at once") }) {
            await sendFailure(provider)
        }
        #expect(error?.kind == .network, "\(String(describing: error))")
        #expect(error?.reasonCode == "evolution:network")
        try await http.client.shutdown()
    }
}

/// The provider request carries the task's correlation id as X-Correlation-ID, for both
/// providers, and no such header when none is bound.
@Suite("Correlation id in provider requests", .timeLimit(.minutes(2)))
struct ProviderCorrelationTests {
    @Test func evolutionRequestsCarryTheBoundID() async throws {
        try await withFakeEvolution { fake, client in
            let id = try #require(CorrelationID(validating: "campanha-7:lote/2"))
            _ = try await Correlation.withID(id) { try await evolution(fake, client).sendText(to: telefone, text: texto, logger: logger) }
            _ = try await evolution(fake, client).sendText(to: telefone, text: texto, logger: logger)
            #expect(fake.requests.map { $0.header("x-correlation-id") } == ["campanha-7:lote/2", nil])
        }
    }

    @Test func zapiRequestsCarryTheBoundID() async throws {
        try await withFakeZAPI { fake, client in
            let id = CorrelationID.generate()
            _ = try await Correlation.withID(id) { try await zapi(fake, client).sendText(to: telefone, text: texto, logger: logger) }
            _ = try await zapi(fake, client).sendText(to: telefone, text: texto, logger: logger)
            #expect(fake.requests.map { $0.header("x-correlation-id") } == [id.value, nil])
        }
    }
}

@Suite("Z-API provider against the fake Z-API", .timeLimit(.minutes(2)))
struct ZAPIProviderTests {
    @Test func aSendReturnsTheMessageID() async throws {
        try await withFakeZAPI { fake, client in
            let receipt = try await zapi(fake, client).sendText(to: telefone, text: texto, logger: logger)

            let sent = try #require(fake.sentTexts.first)
            #expect(fake.sentTexts.count == 1)
            #expect(receipt == ProviderReceipt(provider: "zapi", messageID: sent.messageID))
            #expect(sent.phone == telefone)
            #expect(sent.message == texto)
            let request = try #require(fake.requests.first)
            #expect(request.path == "/instances/fake-instance/token/\(zapiToken)/send-text")
            #expect(request.header("client-token") == zapiClientToken)
        }
    }

    @Test func aWrongClientTokenIs403() async throws {
        try await withFakeZAPI { fake, client in
            let error = await sendFailure(zapi(fake, client, clientToken: "not-the-client-token"))
            #expect(error?.kind == .http(status: 403))
            #expect(error?.reasonCode == "zapi:http_403")
            #expect(error?.detail.contains("not allowed") == true)
            #expect(fake.sentTexts.isEmpty)
        }
    }

    @Test func valueFalseIsAnInvalidResponse() async throws {
        try await withFakeZAPI { fake, client in
            fake.mode = .valueFalse
            let error = await sendFailure(zapi(fake, client))
            #expect(error?.kind == .invalidResponse)
            #expect(error?.reasonCode == "zapi:invalid_response")
            #expect(fake.sendAttempts == 1)
        }
    }

    @Test func anOutageIsANetworkError() async throws {
        try await withFakeZAPI { fake, client in
            fake.mode = .outage
            let error = await sendFailure(zapi(fake, client))
            #expect(error?.kind == .network)
            #expect(error?.reasonCode == "zapi:network")
        }
    }

    @Test func theTokensNeverAppearInAnError() async throws {
        try await withFakeZAPI { fake, client in
            let provider = zapi(fake, client)
            fake.mode = .status(500, body: #"{"error":"instance \#(zapiToken) expired; client \#(zapiClientToken)"}"#)
            let echoedResult = await sendFailure(provider)
            let echoed = try #require(echoedResult)
            fake.mode = .outage
            let outageResult = await sendFailure(provider)
            let outage = try #require(outageResult)
            fake.mode = .accept
            let rejectedResult = await sendFailure(zapi(fake, client, clientToken: "wrong-\(zapiClientToken)"))
            let rejected = try #require(rejectedResult)
            let slowResult = await sendFailure(zapi(fake, client, timeout: .milliseconds(200)), whileLatency: fake)
            let slow = try #require(slowResult)

            #expect(echoed.detail == "instance <redacted> expired; client <redacted>")
            for error in [echoed, outage, rejected, slow] {
                #expect(!error.description.contains(zapiToken))
                #expect(!error.description.contains(zapiClientToken))
                #expect(!error.description.contains(texto))
            }
        }
    }
}

// MARK: - Helpers

/// Runs `body` with a fresh HTTP client that is shut down afterwards, even when `body` throws.
private func withHTTPClient<Result: Sendable>(_ body: (HTTPClient) async throws -> Result) async throws -> Result {
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    do {
        let result = try await body(client)
        try await client.shutdown()
        return result
    } catch {
        try? await client.shutdown()
        throw error
    }
}

private func withFakeEvolution(_ body: (FakeEvolution, HTTPClient) async throws -> Void) async throws {
    let fake = try await FakeEvolution.start(apiKey: evolutionKey)
    do {
        try await withHTTPClient { client in try await body(fake, client) }
        await fake.shutdown()
    } catch {
        await fake.shutdown()
        throw error
    }
}

private func withFakeZAPI(_ body: (FakeZAPI, HTTPClient) async throws -> Void) async throws {
    let fake = try await FakeZAPI.start(token: zapiToken, clientToken: zapiClientToken)
    do {
        try await withHTTPClient { client in try await body(fake, client) }
        await fake.shutdown()
    } catch {
        await fake.shutdown()
        throw error
    }
}

/// A provider for `fake`; the base URL has a trailing slash, which must be tolerated.
private func evolution(
    _ fake: FakeEvolution,
    _ client: HTTPClient,
    apiKey: String? = nil,
    instance: String? = nil,
    timeout: Duration = .seconds(5)
) -> EvolutionProvider {
    EvolutionProvider(
        configuration: .init(
            baseURL: fake.baseURL + "/",
            apiKey: apiKey ?? fake.apiKey,
            instance: instance ?? fake.instance,
            timeout: timeout
        ),
        httpClient: client
    )
}

private func zapi(_ fake: FakeZAPI, _ client: HTTPClient, clientToken: String? = nil, timeout: Duration = .seconds(5)) -> ZAPIProvider {
    ZAPIProvider(
        configuration: .init(
            baseURL: fake.baseURL,
            instanceID: fake.instanceID,
            token: fake.token,
            clientToken: clientToken ?? fake.clientToken,
            timeout: timeout
        ),
        httpClient: client
    )
}

/// The `ProviderError` a send ends in; nil, with an issue recorded, when it succeeds or
/// throws anything else.
private func sendFailure(_ provider: some WhatsAppProvider, to number: String = telefone) async -> ProviderError? {
    do {
        let receipt = try await provider.sendText(to: number, text: texto, logger: logger)
        Issue.record("expected a ProviderError, got \(receipt)")
        return nil
    } catch let error as ProviderError {
        return error
    } catch {
        Issue.record("expected a ProviderError, got \(String(reflecting: error))")
        return nil
    }
}

/// `sendFailure` with the fake Z-API answering two seconds late.
private func sendFailure(_ provider: ZAPIProvider, whileLatency fake: FakeZAPI) async -> ProviderError? {
    fake.latency = .seconds(2)
    defer { fake.latency = .zero }
    return await sendFailure(provider)
}
