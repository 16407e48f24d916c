//! The formats watchpost parses, by name, and recognising them from a file's first bytes.
