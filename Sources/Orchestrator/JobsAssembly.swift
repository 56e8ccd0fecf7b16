import Database
import Jobs
import Logging
import PostgresNIO
import Queue

/// The jobs every fila process knows, and how it runs them.
enum JobsAssembly {
    static func catalog(configuration: FilaConfiguration) -> JobCatalog {
        // The built-in names are fixed and distinct: a failure here is a programming error.
        try! JobCatalog(BuiltinJobs.all(settings: .init(timeZone: configuration.timeZone)) + [ChipJobs.connectionMonitor(configuration: configuration)])
    }

    static func api(client: PostgresClient, url: DatabaseURL, identity: ProcessIdentity, configuration: FilaConfiguration, logger: Logger) -> JobsAPI {
        JobsAPI(
            client: client,
            catalog: catalog(configuration: configuration),
            runner: JobRunner(client: client, lockURL: url, workerID: identity.id),
            admin: AdminAuthorization(token: configuration.adminToken),
            logger: logger
        )
    }

    static func scheduler(client: PostgresClient, url: DatabaseURL, identity: ProcessIdentity, configuration: FilaConfiguration, logger: Logger) -> JobScheduler {
        JobScheduler(
            catalog: catalog(configuration: configuration),
            runner: JobRunner(client: client, lockURL: url, workerID: identity.id),
            logger: logger
        )
    }
}
