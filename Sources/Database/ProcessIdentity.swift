#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Who a process is in `worker_heartbeats` and in `fila_mensagens.worker_id`.
public struct ProcessIdentity: Sendable, Hashable {
    public enum Kind: String, Sendable {
        case worker, scheduler, api, all, cli
    }

    /// `host:pid:random`: unique across machines and restarts.
    public let id: String
    public let kind: Kind
    public let host: String
    public let pid: Int32
    public let version: String

    public init(kind: Kind, version: String) {
        var buffer = [CChar](repeating: 0, count: 256)
        let host = gethostname(&buffer, buffer.count) == 0
            ? String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            : "unknown-host"
        let pid = getpid()
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        self.init(id: "\(host):\(pid):\(suffix)", kind: kind, host: host, pid: pid, version: version)
    }

    public init(id: String, kind: Kind, host: String, pid: Int32, version: String) {
        self.id = id
        self.kind = kind
        self.host = host
        self.pid = pid
        self.version = version
    }
}
