/// This build of Spool (`spool --version`, the worker registry).
public enum SpoolVersion {
    public static let current = "0.5.0"
}
