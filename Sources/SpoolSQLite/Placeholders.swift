import Foundation

/// Builds `(?, ?, ?), (?, ?, ?), ...` for a multi-row statement.
func placeholders(rows: Int, columns: Int) -> String {
    let row = "(" + Array(repeating: "?", count: columns).joined(separator: ", ") + ")"
    return Array(repeating: row, count: rows).joined(separator: ", ")
}
