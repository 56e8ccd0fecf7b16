import Database
import Foundation
import Logging
import PostgresNIO

/// One row of `ops.chips_uso` (seed T05.4): a chip's sends and failures, today's count
/// against its limit, its connection and its breaker.
public struct ChipUsage: Sendable, Hashable, Codable {
    public let id: String
    public let nome: String
    public let provider: String
    public let status: String
    public let isDefault: Bool
    public let enviadasHoje: Int
    public let falhasHoje: Int
    public let enviadas7d: Int
    public let falhas7d: Int
    public let ultimoEnvioAt: Date?
    /// The day `usoHoje` counts (in the workers' time zone); nil before the first send.
    public let usoDia: String?
    public let usoHoje: Int
    public let limiteDiario: Int
    public let minIntervaloSegundos: Int
    public let connectionState: String
    public let connectionSince: Date?
    public let connectionCheckedAt: Date?
    public let circuitState: String

    /// The view's own column names.
    enum CodingKeys: String, CodingKey {
        case id, nome, provider, status
        case isDefault = "is_default"
        case enviadasHoje = "enviadas_hoje"
        case falhasHoje = "falhas_hoje"
        case enviadas7d = "enviadas_7d"
        case falhas7d = "falhas_7d"
        case ultimoEnvioAt = "ultimo_envio_at"
        case usoDia = "uso_dia"
        case usoHoje = "uso_hoje"
        case limiteDiario = "limite_diario"
        case minIntervaloSegundos = "min_intervalo_segundos"
        case connectionState = "connection_state"
        case connectionSince = "connection_since"
        case connectionCheckedAt = "connection_checked_at"
        case circuitState = "circuit_state"
    }

    /// 0–100 for `/health/score`: an active chip that is connected (or not yet checked) with
    /// its breaker closed is 100; one whose state is unknown or whose breaker is probing, 50;
    /// one disconnected or with its breaker open, 0. Nil for a chip not in service.
    public var score: Int? {
        guard status == "ativo" else { return nil }
        let connection: Int
        switch connectionState {
        case "open": connection = 100
        case "unknown": connection = connectionCheckedAt == nil ? 100 : 50
        default: connection = 0
        }
        let circuit: Int
        switch circuitState {
        case "CLOSED", "FORCED_CLOSED": circuit = 100
        case "HALF_OPEN": circuit = 50
        default: circuit = 0
        }
        return min(connection, circuit)
    }

    /// Every chip, as `ops.chips_uso` shows it, by id.
    public static func all(client: PostgresClient, logger: Logger) async throws -> [ChipUsage] {
        do {
            let rows = try await client.query(
                """
                SELECT id, nome, provider, status, is_default, enviadas_hoje, falhas_hoje, enviadas_7d, falhas_7d,
                       ultimo_envio_at, uso_dia::text, uso_hoje, limite_diario, min_intervalo_segundos,
                       connection_state, connection_since, connection_checked_at, circuit_state
                  FROM ops.chips_uso ORDER BY id
                """,
                logger: logger
            )
            var usage: [ChipUsage] = []
            for try await row in rows {
                let (id, nome, provider, status, isDefault, sentToday, failedToday, sent7d, failed7d) =
                    try row.decode((String, String, String, String, Bool, Int64, Int64, Int64, Int64).self)
                let columns = row.makeRandomAccess()
                usage.append(
                    ChipUsage(
                        id: id, nome: nome, provider: provider, status: status, isDefault: isDefault,
                        enviadasHoje: Int(sentToday), falhasHoje: Int(failedToday), enviadas7d: Int(sent7d), falhas7d: Int(failed7d),
                        ultimoEnvioAt: try columns[9].decode(Date?.self),
                        usoDia: try columns[10].decode(String?.self),
                        usoHoje: Int(try columns[11].decode(Int32.self)),
                        limiteDiario: Int(try columns[12].decode(Int32.self)),
                        minIntervaloSegundos: Int(try columns[13].decode(Int32.self)),
                        connectionState: try columns[14].decode(String.self),
                        connectionSince: try columns[15].decode(Date?.self),
                        connectionCheckedAt: try columns[16].decode(Date?.self),
                        circuitState: try columns[17].decode(String.self)
                    )
                )
            }
            return usage
        } catch {
            throw DatabaseError(wrapping: error, context: "reading ops.chips_uso failed")
        }
    }
}
