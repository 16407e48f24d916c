//! JSON lines: one JSON object per line, fields as they are.
