#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import PostgresNIO

/// A statement's plan as `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` reports it, for tests that
/// bound what a query reads rather than how long it takes.
///
/// ```swift
/// let plan = try await QueryPlan.explain("SELECT * FROM ops.circuit_states", on: connection, logger: logger)
/// #expect(plan.buffers < 100)
/// #expect(plan.scans(of: "circuit_transitions").allSatisfy { $0 != "Seq Scan" })
/// ```
public struct QueryPlan: Sendable {
    /// One node of the plan tree.
    public struct Node: Sendable, Decodable {
        public let nodeType: String
        public let relationName: String?
        public let sharedHitBlocks: Int
        public let sharedReadBlocks: Int
        public let actualRows: Double
        public let plans: [Node]?

        enum CodingKeys: String, CodingKey {
            case nodeType = "Node Type"
            case relationName = "Relation Name"
            case sharedHitBlocks = "Shared Hit Blocks"
            case sharedReadBlocks = "Shared Read Blocks"
            case actualRows = "Actual Rows"
            case plans = "Plans"
        }
    }

    public let root: Node
    /// The plan as Postgres printed it, for failure messages.
    public let json: String

    /// Pages the statement's execution touched, in shared buffers or read in (planning
    /// excluded): the root node counts its whole tree.
    public var buffers: Int { root.sharedHitBlocks + root.sharedReadBlocks }

    /// Every node, depth first.
    public var nodes: [Node] {
        var result: [Node] = []
        func visit(_ node: Node) {
            result.append(node)
            node.plans?.forEach(visit)
        }
        visit(root)
        return result
    }

    /// The node types that read `relation` ("Seq Scan", "Index Scan", …).
    public func scans(of relation: String) -> [String] {
        nodes.filter { $0.relationName == relation }.map(\.nodeType)
    }

    /// Runs `query` under `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` in a transaction that is
    /// rolled back, so a statement that writes leaves nothing behind.
    public static func explain(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger) async throws -> QueryPlan {
        try await connection.query("BEGIN", logger: logger)
        do {
            let explained = PostgresQuery(unsafeSQL: "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query.sql, binds: query.binds)
            let json = try await connection.query(explained, logger: logger).collect().first?.decode(String.self) ?? ""
            try await connection.query("ROLLBACK", logger: logger)
            struct Statement: Decodable {
                let plan: Node
                enum CodingKeys: String, CodingKey { case plan = "Plan" }
            }
            guard let statement = try JSONDecoder().decode([Statement].self, from: Data(json.utf8)).first else {
                throw TestSetupError("EXPLAIN returned no plan: \(json)")
            }
            return QueryPlan(root: statement.plan, json: json)
        } catch {
            try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }
}
