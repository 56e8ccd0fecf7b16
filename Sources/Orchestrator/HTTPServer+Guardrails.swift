#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Hummingbird
import Logging
import PostgresNIO
import Primitives

/// `/admin/medicos`: unblock a doctor with a motivo (seed T06.3), the HTTP twin of
/// `SELECT ops.unblock_medico(cliente_id, motivo)`. Needs the admin token.
///
/// ```
/// POST /admin/medicos/medico-42/unblock
/// Authorization: Bearer $ADMIN_TOKEN
/// {"motivo": "confirmou por telefone que quer receber", "por": "maria"}
/// ```
///
/// The token is shared, so the record's `unblocked_by` is `admin-token`, followed by the
/// name the caller declares in `por` when it gives one (`admin-token:maria`).
struct GuardrailsAPI: Sendable {
    let client: PostgresClient
    let admin: AdminAuthorization<APIRequestContext>
    let logger: Logger

    /// The body's size that is read at most.
    static let maximumBodyBytes = 16 * 1024

    func register(on router: Router<APIRequestContext>) {
        let medicos = router.group("/admin/medicos")
            .add(middleware: admin)
            .add(middleware: DatabaseFailureMiddleware(logger: logger))
        medicos.post(":cliente_id/unblock") { request, context in
            let clienteID = context.parameters.get("cliente_id") ?? ""
            var request = request
            let body = try await request.collectBody(upTo: Self.maximumBodyBytes)
            let input = try Self.unblockRequest(from: Data(buffer: body), clienteID: clienteID)
            return try await unblock(input)
        }
    }

    struct UnblockRequest: Sendable, Equatable {
        let clienteID: String
        let motivo: String
        let by: String
    }

    /// What the unblock changed: the block, now with its unblock.
    struct Unblocked: ResponseEncodable, Sendable {
        let cliente_id: String
        let motivo: String
        let blocked_at: Date
        let blocked_by: String
        let unblocked_at: Date
        let unblocked_by: String
        let unblock_motivo: String
    }

    /// The request, or a 400 saying what is wrong with it; nothing is written before.
    static func unblockRequest(from body: Data, clienteID: String) throws(APIError) -> UnblockRequest {
        guard (1...200).contains(clienteID.unicodeScalars.count), !clienteID.contains("\u{0}") else {
            throw APIError(status: .badRequest, code: "invalid_cliente_id", message: "cliente_id must be 1-200 characters")
        }
        let example = #"send {"motivo": "why the doctor is unblocked"} as JSON"#
        guard !body.isEmpty else {
            throw APIError(status: .badRequest, code: "motivo_required", message: "a motivo is required: \(example)")
        }
        guard case .object(let fields)? = try? JSONDecoder().decode(JSONValue.self, from: body) else {
            throw APIError(status: .badRequest, code: "invalid_body", message: "the body is not a JSON object: \(example)")
        }
        guard let value = fields["motivo"], value != .null else {
            throw APIError(status: .badRequest, code: "motivo_required", message: "a motivo is required: \(example)")
        }
        guard let raw = value.stringValue else {
            throw APIError(status: .badRequest, code: "invalid_motivo", message: "motivo must be a string")
        }
        let motivo = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !motivo.isEmpty else {
            throw APIError(status: .badRequest, code: "motivo_required", message: "a motivo is required and may not be blank: \(example)")
        }
        guard motivo.unicodeScalars.count <= 1000, !motivo.contains("\u{0}") else {
            throw APIError(status: .badRequest, code: "invalid_motivo", message: "motivo must be at most 1000 characters")
        }
        var by = "admin-token"
        if let declared = fields["por"], declared != .null {
            guard let name = declared.stringValue?.trimmingCharacters(in: .whitespacesAndNewlines),
                  (1...100).contains(name.unicodeScalars.count), !name.contains("\u{0}")
            else {
                throw APIError(status: .badRequest, code: "invalid_por", message: "por, when given, must be a name of 1-100 characters")
            }
            by += ":" + name
        }
        return UnblockRequest(clienteID: clienteID, motivo: motivo, by: by)
    }

    private func unblock(_ input: UnblockRequest) async throws -> Unblocked {
        do {
            let rows = try await client.query(
                """
                SELECT cliente_id, motivo, blocked_at, blocked_by, unblocked_at, unblocked_by, unblock_motivo
                  FROM fila_medico_unblock(\(input.clienteID), \(input.motivo), \(input.by))
                """,
                logger: logger
            )
            for try await (clienteID, motivo, blockedAt, blockedBy, unblockedAt, unblockedBy, unblockMotivo)
                in rows.decode((String, String, Date, String, Date, String, String).self)
            {
                logger.notice(
                    "doctor unblocked through the API",
                    metadata: ["cliente_id": .string(clienteID), "unblocked_by": .string(unblockedBy)]
                )
                return Unblocked(
                    cliente_id: clienteID, motivo: motivo, blocked_at: blockedAt, blocked_by: blockedBy,
                    unblocked_at: unblockedAt, unblocked_by: unblockedBy, unblock_motivo: unblockMotivo
                )
            }
            throw APIError(status: .internalServerError, code: "internal_error", message: "the unblock returned no row")
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "P0002" {
            throw APIError(status: .notFound, code: "not_blocked", message: "\(input.clienteID) is not blocked")
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "22023" {
            throw APIError(status: .badRequest, code: "invalid_argument", message: error.serverInfo?[.message] ?? "invalid argument")
        }
    }
}
