/// The version `fila version` prints and heartbeats record.
enum FilaVersion {
    static let current = "0.1.0"
}
