import Database
import Logging
import PostgresNIO

/// The seed's queue metrics (T01.4), read from the view `ops.fila_metricas`.
public struct QueueMetrics: Sendable, Hashable, Codable {
    public let pendentes: Int
    public let processando: Int
    public let enviadasUltimaHora: Int
    public let errosUltimaHora: Int
    /// Mean claim-to-sent time of the last hour's sends; nil when nothing was sent.
    public let tempoMedioProcessamentoMs: Int?
    /// How long the most overdue due message has waited; 0 when none is waiting.
    public let mensagemMaisAntigaMinutos: Int

    public init(
        pendentes: Int,
        processando: Int,
        enviadasUltimaHora: Int,
        errosUltimaHora: Int,
        tempoMedioProcessamentoMs: Int?,
        mensagemMaisAntigaMinutos: Int
    ) {
        self.pendentes = pendentes
        self.processando = processando
        self.enviadasUltimaHora = enviadasUltimaHora
        self.errosUltimaHora = errosUltimaHora
        self.tempoMedioProcessamentoMs = tempoMedioProcessamentoMs
        self.mensagemMaisAntigaMinutos = mensagemMaisAntigaMinutos
    }

    enum CodingKeys: String, CodingKey {
        case pendentes
        case processando
        case enviadasUltimaHora = "enviadas_ultima_hora"
        case errosUltimaHora = "erros_ultima_hora"
        case tempoMedioProcessamentoMs = "tempo_medio_processamento_ms"
        case mensagemMaisAntigaMinutos = "mensagem_mais_antiga_minutos"
    }
}

extension MessageQueue {
    /// All six metrics in one query.
    public func metrics(logger: Logger) async throws -> QueueMetrics {
        let query: PostgresQuery = """
            SELECT pendentes, processando, enviadas_ultima_hora, erros_ultima_hora,
                   tempo_medio_processamento_ms, mensagem_mais_antiga_minutos
              FROM ops.fila_metricas
            """
        do {
            let row = try await client.query(query, logger: logger).collect().first!
            let (pendentes, processando, enviadas, erros, tempo, antiga) = try row.decode((Int, Int, Int, Int, Int?, Int).self)
            return QueueMetrics(
                pendentes: pendentes,
                processando: processando,
                enviadasUltimaHora: enviadas,
                errosUltimaHora: erros,
                tempoMedioProcessamentoMs: tempo,
                mensagemMaisAntigaMinutos: antiga
            )
        } catch {
            throw DatabaseError(wrapping: error, context: "reading queue metrics failed")
        }
    }
}
