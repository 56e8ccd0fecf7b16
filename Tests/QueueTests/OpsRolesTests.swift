import Database
import FilaTestSupport
import Foundation
import PostgresNIO
import Queue
import Testing

/// The roles of migration 0019 as people log in with them: a reader reads, an operator changes
/// rows only through the audited ops functions, a producer only enqueues; and none of them can
/// get round a function's checks or its audit.
@Suite("ops roles", .migratedDatabase)
struct OpsRolesTests {
    func strings(_ client: PostgresClient, _ sql: String) async throws -> [String] {
        try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect().map { try $0.decode(String.self) }
    }

    @Test func everyOpsAndFilaFunctionRunsAsItsOwnerOnAPinnedPathForItsRoleOnly() async throws {
        let client = try TestDatabase.current.client
        let functions = try await strings(client, """
            SELECT format('%s definer=%s path=%s public=%s reader=%s operator=%s producer=%s', p.oid::regprocedure, p.prosecdef,
                          (SELECT c FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%') LIKE '%, pg_temp',
                          EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0),
                          has_function_privilege('fila_reader', p.oid, 'EXECUTE'), has_function_privilege('fila_operator', p.oid, 'EXECUTE'),
                          has_function_privilege('fila_producer', p.oid, 'EXECUTE'))
              FROM pg_proc p WHERE p.pronamespace IN ('ops'::regnamespace, 'fila'::regnamespace) ORDER BY 1
            """)
        #expect(functions.count > 25)
        for line in functions {
            let ops = line.hasPrefix("ops.")
            // Adding a chip names a secret the workers send to a URL: the owner's act alone.
            let operates = ops && !line.hasPrefix("ops.add_chip(")
            #expect(line.hasSuffix("definer=t path=t public=f reader=f operator=\(operates ? "t" : "f") producer=\(ops ? "f" : "t")"), "\(line)")
        }
        // Every function of Fila's that pins a search path names pg_temp last: a temporary table
        // cannot stand in for one of Fila's inside it.
        #expect(try await strings(client, """
            SELECT p.oid::regprocedure::text FROM pg_proc p, unnest(p.proconfig) c
             WHERE c LIKE 'search_path=%' AND c NOT LIKE '%, pg_temp' ORDER BY 1
            """) == [])
    }

    @Test func theRolesReadButNeverWriteATable() async throws {
        let client = try TestDatabase.current.client
        // Every table the migrations made, the views of ops among them.
        let grants = try await strings(client, """
            SELECT format('%s.%s reader=%s writers=%s producer_reads=%s', n.nspname, c.relname,
                          has_table_privilege('fila_reader', c.oid, 'SELECT'),
                          (SELECT string_agg(r, ',') FROM unnest(ARRAY['fila_reader', 'fila_operator', 'fila_producer']) r
                            WHERE has_table_privilege(r, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')),
                          has_table_privilege('fila_producer', c.oid, 'SELECT'))
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('public', 'ops') AND c.relkind IN ('r', 'v', 'p') ORDER BY 1
            """)
        #expect(grants.count >= 37)
        for line in grants {
            #expect(line.hasSuffix("reader=t writers= producer_reads=f"), "\(line)")
        }
        #expect(try await strings(client, """
            SELECT r.rolname || ' ' || array_to_string(s.setconfig, ' ') FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
             WHERE r.rolname IN ('fila_reader', 'fila_operator', 'fila_producer') AND s.setdatabase = 0 ORDER BY 1
            """) == ["fila_operator", "fila_producer", "fila_reader"].map {
                "\($0) statement_timeout=60s lock_timeout=5s idle_in_transaction_session_timeout=60s"
            })
        #expect(try await strings(client, "SELECT pg_has_role('fila_operator', 'fila_reader', 'MEMBER')::text") == ["true"])
    }

    @Test func aReaderReadsEveryViewAndChangesNothing() async throws {
        let views = try await strings(try TestDatabase.current.client, "SELECT 'ops.' || viewname FROM pg_views WHERE schemaname = 'ops' ORDER BY 1")
        #expect(views.count >= 15)
        try await TestDatabase.withLogin(in: .reader) { client, _ in
            for view in views {
                do {
                    _ = try await client.query(PostgresQuery(unsafeSQL: "SELECT * FROM \(view) LIMIT 1"), logger: logger).collect()
                } catch {
                    Issue.record("a reader cannot read \(view): \(String(reflecting: error))")
                }
            }
            _ = try await client.query("SELECT count(*) FROM fila_mensagens", logger: logger).collect()
            await expectDenied(client, "SELECT ops.pause_sending('a reader tries')")
            await expectDenied(client, "UPDATE fila_mensagens SET prioridade = 1")
            await expectDenied(client, "INSERT INTO ops_audit (acao, linhas) VALUES ('forged', 0)")
            await expectDenied(client, "SELECT * FROM fila.enqueue('medico-1', '5511999990001', 'Olá', 'resposta')")
        }
        #expect(try await strings(try TestDatabase.current.client, "SELECT count(*)::text FROM ops_audit") == ["0"])
    }

    @Test func aProducerEnqueuesThroughFilaEnqueueOnly() async throws {
        try await TestDatabase.withLogin(in: .producer) { client, _ in
            let inserted = try await strings(client, "SELECT inserted::text FROM fila.enqueue('medico-1', '5511999990001', 'Olá', 'resposta', idempotency_key => 'k1')")
            #expect(inserted == ["true"])
            #expect(try await strings(client, "SELECT inserted::text FROM fila.enqueue('medico-1', '5511999990001', 'Olá', 'resposta', idempotency_key => 'k1')") == ["false"])
            #expect(try await strings(client, #"SELECT count(*)::text FROM fila.enqueue_batch('[{"cliente_id": "medico-2", "telefone": "5511999990002", "conteudo": "Oi", "tipo": "campanha"}]')"#) == ["1"])
            await expectDenied(client, "INSERT INTO fila_mensagens (cliente_id, telefone, conteudo, tipo) VALUES ('m', '5511999990003', 'x', 'resposta')")
            await expectDenied(client, "SELECT count(*) FROM fila_mensagens")
            await expectDenied(client, "SELECT ops.pause_sending('a producer tries')")
        }
        #expect(try await strings(try TestDatabase.current.client, "SELECT count(*)::text FROM fila_mensagens") == ["2"])
    }

    /// A temporary table of an operator's session is searched before the schema's tables
    /// wherever a search path does not name pg_temp: the audit row must still land in ops_audit.
    @Test func anOperatorsTemporaryTablesCannotHideAnIntervention() async throws {
        try await TestDatabase.withLogin(in: .operator) { client, login in
            try await client.withConnection { connection in
                try await connection.query("CREATE TEMP TABLE ops_audit (acao text, argumentos jsonb, motivo text, linhas integer)", logger: logger)
                try await connection.query("CREATE TEMP TABLE app_settings (key text PRIMARY KEY, value jsonb, description text)", logger: logger)
                _ = try await connection.query("SELECT ops.pause_sending('shadowed?')", logger: logger).collect()
            }
            #expect(try await strings(try TestDatabase.current.client, "SELECT feito_por || ' ' || acao FROM public.ops_audit") == ["\(login) pause_sending"])
            #expect(try await strings(try TestDatabase.current.client, "SELECT value->>'por' FROM public.app_settings WHERE key = 'sending.pause'") == [login])
        }
    }

    /// A role that may insert but is not in fila_guardrail_bypass cannot make the bypass check
    /// read a temporary pg_roles of its own.
    @Test func aTemporaryPgRolesDoesNotGrantAGuardrailBypass() async throws {
        let owner = try TestDatabase.current.client
        try await TestDatabase.withLogin(in: .reader) { client, login in
            _ = try await owner.query(PostgresQuery(unsafeSQL: "GRANT INSERT ON fila_mensagens TO \(login)"), logger: logger).collect()
            try await client.withConnection { connection in
                try await connection.query("CREATE TEMP TABLE pg_roles (rolname name, rolsuper boolean)", logger: logger)
                try await connection.query("INSERT INTO pg_roles VALUES (current_user, true)", logger: logger)
                do {
                    try await connection.query(
                        """
                        INSERT INTO public.fila_mensagens (cliente_id, telefone, conteudo, tipo, guardrail_bypass_motivo)
                        VALUES ('medico-1', '5511999990001', 'x', 'campanha', 'forged')
                        """,
                        logger: logger
                    )
                    Issue.record("a bypass was set by a role outside fila_guardrail_bypass")
                } catch let error as PSQLError {
                    #expect(error.serverInfo?[.sqlState] == "42501", "\(String(reflecting: error))")
                }
            }
            _ = try await owner.query(PostgresQuery(unsafeSQL: "REVOKE INSERT ON fila_mensagens FROM \(login)"), logger: logger).collect()
        }
    }
}
